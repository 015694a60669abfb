"""Benchmark: what each of protoviz's shortcuts changes, against the paper authors' procedure.

The paper authors' extraction code (configs/paper.yaml's procedure) runs every channel
through all evolution generations with a fixed step size, climbs from the recombined
mean for a fixed number of Adam steps on the unit after its ReLU, never redraws silent
codes, and starts every checkpoint from the same codes. protoviz's demo instead exits
early, adapts the step size, climbs from the best sample on the pre-ReLU score, redraws
silent channels and draws new start codes per epoch. Each row here changes one of
those from the paper's procedure (the last row: all of them, the demo's procedure),
on the demo's trained checkpoints, and reports, averaged over layers:

- the mean final activation and the fraction of dead prototypes (activation 0);
- diversity (mean pixel MSE between the prototypes of a layer's channels), re-evolution
  consistency (pixel MSE between the two repeats of a channel) and rate of change
  (pixel MSE of a channel between consecutive epochs), unmasked, each as its ratio to
  the paper procedure's;
- seconds per prototype on this machine, in the same run.

The schedule is the paper's (20 generations of 30, sigma 2, 50 Adam steps) in the
demo's ``fourier`` prior (the fc6 weights cannot be downloaded here) at that prior's
Adam rate, 0.8 (0.01 belongs to the fc6 latent; ``bench/choices/adam_lr.py``).

    python -m bench.choices.paper_procedure --checkpoints out/checkpoints --epochs 3,4,5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from protoviz_core.engine.synthesis import Procedure, synthesize
from protoviz_core.engine.units import channel_count, spaced_channels
from protoviz_core.measures.distance import diversity, mean_paired
from protoviz_core.prototypes.extraction import shard_seed
from protoviz_core.prototypes.store import ShardId
from protoviz_core.training.checkpoints import list_checkpoints, load_backbone

PAPER = dict(
    early_exit=False,
    evolution="fixed_sigma",
    adam_start="mean",
    objective="after_relu",
    redraw_dead=False,
    streams="starts",
)
DEVIATIONS = {
    "the paper's procedure": {},
    "early exits (evolution and Adam)": {"early_exit": True},
    "adapted step size (sep-CMA-ES)": {"evolution": "sep_cma"},
    "Adam from the best sample": {"adam_start": "best"},
    "pre-ReLU score": {"objective": "before_relu"},
    "silent channels redrawn": {"redraw_dead": True},
    "new start codes per epoch": {"streams": "independent"},
    "all of them (the demo's procedure)": {
        "early_exit": True,
        "evolution": "sep_cma",
        "adam_start": "best",
        "objective": "before_relu",
        "redraw_dead": True,
        "streams": "independent",
    },
}


def run(procedure: dict, backbones: dict, layers: list[str], channels: dict, args) -> dict:
    """Prototypes {(epoch, layer, repeat): images (N, 3*S*S)}, activations and seconds of one procedure."""
    streams = procedure["streams"]
    options = {k: v for k, v in procedure.items() if k != "streams"}
    images, activations, seconds = {}, [], 0.0
    for epoch, (model, meta) in backbones.items():
        for layer in layers:
            for repeat in (1, 2):
                shard = ShardId(epoch, layer, repeat)
                seed = shard_seed(1, 0, shard)
                start_seed = shard_seed(1, 0, shard, common_streams=True) if streams == "starts" else None
                started = time.perf_counter()
                searched = Procedure(
                    generator="fourier",
                    image_size=meta["image_size"],
                    cma_steps=args.cma_steps,
                    cma_popsize=30,
                    cma_sigma=2.0,
                    adam_steps=50,
                    adam_lr=args.adam_lr,
                    normalize=meta["normalize"],
                    **options,
                )
                made = synthesize(model, layer, channels[layer], searched, seed=seed, start_seed=start_seed)
                seconds += time.perf_counter() - started
                images[(epoch, layer, repeat)] = made.images.flatten(1)
                activations.append(made.activations)
    return {"images": images, "activations": torch.cat(activations), "seconds": seconds}


def measures(result: dict, epochs: list[int], layers: list[str]) -> dict:
    images = result["images"]
    div = np.mean(
        [diversity(images[(e, layer, r)], "mse") for e in epochs for layer in layers for r in (1, 2)]
    )
    con = np.mean(
        [mean_paired(images[(e, layer, 1)], images[(e, layer, 2)], "mse") for e in epochs for layer in layers]
    )
    roc = np.mean(
        [
            mean_paired(images[(a, layer, r)], images[(b, layer, r)], "mse")
            for a, b in zip(epochs, epochs[1:])
            for layer in layers
            for r in (1, 2)
        ]
    )
    acts = result["activations"]
    return {
        "activation": float(acts.mean()),
        "dead": float((acts <= 0).float().mean()),
        "diversity": div,
        "consistency": con,
        "rate_of_change": roc,
        "seconds": result["seconds"] / len(acts),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", default="out/checkpoints")
    p.add_argument("--epochs", default="3,4,5")
    p.add_argument("--layers", default="layer1,layer2,layer3,layer4")
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--cma-steps", type=int, default=20)
    p.add_argument("--adam-lr", type=float, default=0.8)
    p.add_argument("--only", default=None, help="comma-separated row numbers (0 = the paper's procedure)")
    args = p.parse_args()
    epochs = [int(e) for e in args.epochs.split(",")]
    layers = args.layers.split(",")
    found = list_checkpoints(args.checkpoints)
    backbones = {e: load_backbone(found[e]) for e in epochs}
    first = next(iter(backbones.values()))
    channels = {
        layer: spaced_channels(channel_count(first[0], layer, first[1]["image_size"]), args.channels)
        for layer in layers
    }
    rows = list(DEVIATIONS.items())
    if args.only:
        rows = [rows[int(i)] for i in args.only.split(",")]
    results = {}
    for name, change in rows:
        results[name] = measures(run({**PAPER, **change}, backbones, layers, channels, args), epochs, layers)
        print(name, results[name], flush=True)
    base = results.get("the paper's procedure")
    print(
        f"\n{args.checkpoints}, epochs {epochs}, {args.channels} channels of {', '.join(layers)}, 2 repeats; "
        f"fourier prior, {args.cma_steps} x 30 evolution, sigma 2, 50 Adam steps at lr {args.adam_lr}\n"
    )
    print(
        "| procedure | mean activation | dead | diversity | consistency | rate of change | s per prototype |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, m in results.items():

        def ratio(key):
            return f"{m[key]:.4f}" + (f" ({m[key] / base[key]:.2f}x)" if base else "")

        print(
            f"| {name} | {m['activation']:.2f} | {m['dead']:.2f} | {ratio('diversity')} | "
            f"{ratio('consistency')} "
            f"| {ratio('rate_of_change')} | {m['seconds']:.3f}"
            + (f" ({m['seconds'] / base['seconds']:.2f}x)" if base else "")
            + " |"
        )


if __name__ == "__main__":
    main()
