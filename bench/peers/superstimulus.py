"""Benchmark: do prototypes beat the data? The superstimulus ratio per layer, side by side.

For each layer's evenly spaced channels (the demo's selection) of one checkpoint,
every row makes one image per channel and is scored the same way: the channel's
centre activation on its own image (8-bit, float32) over the highest activation
any image of the whole data set gives that unit (every split, not the exemplars
stage's sample). Rows, in one run:

- the demo's own prototypes (``--store``, both repeats of the checkpoint's epoch),
  recomputed from the stored images and the checkpoint, not read from the index;
- protoviz, the demo's schedule (params.yaml's extract settings);
- protoviz, the demo's schedule at Adam lr 0.05, its rate before ``bench/choices/adam_lr.py``;
- protoviz, the paper configuration's schedule (configs/paper.yaml: CMA-ES 20 x 30,
  sigma 2, Adam 100 steps at lr 0.01) in the demo's prior, since the paper's
  generator weights cannot be loaded offline;
- Lucent's standard recipe (torch-lucent 0.1.8 ``render_vis`` defaults: Fourier
  parameterisation with decorrelated colour, its standard transforms, Adam at lr
  0.05, 512 steps), all channels of a layer batched;
- the exemplars stage's sample (params.yaml ``exemplars``): its best image per unit,
  the yardstick the pipeline uses, against the whole set's;
- the natural maximum itself (ratio 1 by definition) and the time to find it.

Times are per prototype on this machine, in the same run.

    pip install --no-deps torch-lucent==0.1.8 &&
        pip install kornia==0.4.1 decorator ipython  # as make bench does
    python -m bench.peers.superstimulus --checkpoint out/checkpoints/epoch_0005.pt --data data/stl10_binary
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import yaml

from bench.common import lucent_images
from protoviz_core.engine.synthesis import Procedure, synthesize
from protoviz_core.engine.units import centre_activation, channel_count, layer_reader, spaced_channels
from protoviz_core.measures.exemplars import Pool, sample_positions, top_exemplars
from protoviz_core.models.backbones import NORMALIZE
from protoviz_core.pipeline.config import parse_params
from protoviz_core.prototypes.superstimulus import superstimulus_ratio
from protoviz_core.training.checkpoints import load_backbone


def score(model, layer, images: torch.Tensor, channels: torch.Tensor, normalize: dict) -> np.ndarray:
    """Centre activation (N,) of each channel on its own image (N, 3, S, S) in [0, 1], as stored (8-bit)."""
    images = images.clamp(0, 1).mul(255).round().div(255)
    mean = torch.tensor(normalize["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(normalize["std"]).view(1, 3, 1, 1)
    with torch.no_grad(), layer_reader(model, layer) as read:
        return centre_activation(read((images - mean) / std), channels).float().numpy()


def run_protoviz(model, layer, channels, schedule: dict, image_size: int, normalize: dict):
    started = time.perf_counter()
    procedure = Procedure(image_size=image_size, normalize=normalize, **schedule)
    made = synthesize(model, layer, channels, procedure, seed=0)
    return time.perf_counter() - started, score(model, layer, made.images, channels, normalize)


def run_lucent(model, layer, channels, image_size: int, normalize: dict, steps: int):
    """Lucent's render_vis with its defaults, one image per channel, batched, on the centre unit."""
    # Its defaults: standard_transforms, and preprocess appends ImageNet's normalisation, which is the
    # checkpoints' own (protoviz_core.models.backbones.NORMALIZE); the caller checks that.
    elapsed, final = lucent_images(model, layer, channels, image_size, (steps,))
    return elapsed, score(model, layer, final, channels, normalize)


def schedule_of(params_file: str, prior: str) -> dict:
    x = parse_params(yaml.safe_load(open(params_file)) or {}, params_file).extract
    return dict(
        generator=prior,
        cma_steps=x.cma_steps,
        cma_popsize=x.cma_popsize,
        cma_sigma=x.cma_sigma,
        adam_steps=x.adam_steps,
        adam_lr=x.adam_lr,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="out/checkpoints/epoch_0005.pt")
    p.add_argument("--data", default="data/stl10_binary")
    p.add_argument(
        "--params", default="params.yaml", help="the demo's params (its extract and exemplars settings)"
    )
    p.add_argument("--paper", default="configs/paper.yaml")
    p.add_argument("--layers", default="layer1,layer2,layer3,layer4")
    p.add_argument("--channels", type=int, default=8, help="evenly spaced channels per layer (the demo's)")
    p.add_argument("--lucent-steps", type=int, default=512, help="render_vis's default")
    p.add_argument(
        "--store", default="out/prototypes", help="the demo's prototype store ('' to leave it out)"
    )
    p.add_argument("--skip", default="", help="rows to skip: lucent, paper, old-lr")
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, meta = load_backbone(args.checkpoint)
    model.eval()
    normalize, size = meta["normalize"], meta["image_size"]
    demo = parse_params(yaml.safe_load(open(args.params)) or {}, args.params)
    prior = demo.extract.generator
    layers = args.layers.split(",")
    channels = {layer: spaced_channels(channel_count(model, layer, size), args.channels) for layer in layers}
    skip = set(args.skip.split(","))

    # The natural maximum: every image of the data set, all layers in one pass.
    whole = Pool(args.data, ("train", "unlabeled", "test"), size)
    everything = np.arange(sum(whole.sizes()))
    started = time.perf_counter()
    best = top_exemplars(model, layers, whole, everything, normalize=normalize, top_k=1)
    natural_seconds = time.perf_counter() - started
    natural = {layer: best[layer]["activations"][channels[layer], 0].numpy() for layer in layers}
    # The exemplars stage's yardstick: its sample's best.
    x = demo.exemplars
    pool = Pool(args.data, tuple(x.splits), size)
    sample = sample_positions(sum(pool.sizes()), x.images, x.seed)
    started = time.perf_counter()
    sampled = top_exemplars(model, layers, pool, sample, normalize=normalize, top_k=1)
    sample_seconds = time.perf_counter() - started

    rows: dict[str, dict[str, tuple[float, np.ndarray]]] = {}
    units = sum(len(c) for c in channels.values())
    rows[f"natural maximum ({len(everything)} images)"] = {
        layer: (natural_seconds / units, natural[layer]) for layer in layers
    }
    rows[f"exemplars stage's sample ({len(sample)} images)"] = {
        layer: (sample_seconds / units, sampled[layer]["activations"][channels[layer], 0].numpy())
        for layer in layers
    }
    if args.store:  # the demo's own prototypes, recomputed from the stored images and the checkpoint
        from protoviz_core.prototypes.store import open_prototypes

        store = open_prototypes(args.store)
        epoch = int(torch.load(args.checkpoint, weights_only=True, mmap=True)["epoch"])
        name = f"the demo's stored prototypes (epoch {epoch}, both repeats)"
        rows[name] = {}
        for layer in layers:
            chosen = store.select(epoch=epoch, layer=layer).sort_values(["repeat", "channel"])
            if sorted(set(chosen.channel)) != channels[layer].tolist():
                raise SystemExit(
                    f"{args.store}: {layer} holds channels {sorted(set(chosen.channel))}, "
                    f"not {channels[layer].tolist()}; pass --channels as extracted"
                )
            picked = torch.tensor(chosen.channel.tolist())
            activations = score(model, layer, store.images(chosen).float() / 255, picked, normalize)
            order = {c: i for i, c in enumerate(channels[layer].tolist())}
            yardstick = natural[layer][[order[c] for c in chosen.channel]]
            rows[name][layer] = (float("nan"), activations, yardstick)
    plans = {"protoviz, demo schedule": schedule_of(args.params, prior)}
    if "old-lr" not in skip:  # the demo's Adam rate before bench/choices/adam_lr.py
        plans["protoviz, demo schedule at Adam lr 0.05"] = {
            **schedule_of(args.params, prior),
            "adam_lr": 0.05,
        }
    if "paper" not in skip:
        plans[f"protoviz, paper schedule ({prior} prior)"] = schedule_of(args.paper, prior)
    for name, schedule in plans.items():
        rows[name] = {}
        for layer in layers:
            seconds, activations = run_protoviz(model, layer, channels[layer], schedule, size, normalize)
            rows[name][layer] = (seconds / len(channels[layer]), activations)
            print(f"{name} {layer}: {seconds:.1f} s", flush=True)
    if "lucent" not in skip:
        assert tuple(normalize["mean"]) == NORMALIZE["mean"], (
            "Lucent normalises as ImageNet; this checkpoint does not"
        )
        name = f"Lucent standard recipe ({args.lucent_steps} steps)"
        rows[name] = {}
        for layer in layers:
            seconds, activations = run_lucent(
                model, layer, channels[layer], size, normalize, args.lucent_steps
            )
            rows[name][layer] = (seconds / len(channels[layer]), activations)
            print(f"{name} {layer}: {seconds:.1f} s", flush=True)

    print(
        f"\ncheckpoint {args.checkpoint} ({size} px); {args.channels} channels per layer; prior {prior}; "
        f"ratio = activation / the unit's best over all {len(everything)} images; "
        f"median (min-max) per layer; "
        f"s = seconds per prototype (per unit for the natural rows)\n"
    )
    print("| row | " + " | ".join(f"{layer} ratio | {layer} s" for layer in layers) + " |")
    print("|---|" + "---|---|" * len(layers))
    for name, per_layer in rows.items():
        cells = []
        for layer in layers:
            seconds, activations, *yardstick = per_layer[layer]
            ratio = superstimulus_ratio(activations, yardstick[0] if yardstick else natural[layer])
            known = ratio[~np.isnan(ratio)]
            silent = len(ratio) - len(known)
            text = f"{np.median(known):.2f} ({known.min():.2f}-{known.max():.2f})" if len(known) else "n/a"
            cells.append(text + (f", {silent} unit(s) no image drives" if silent else ""))
            cells.append("-" if np.isnan(seconds) else f"{seconds:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
