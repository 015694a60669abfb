"""Benchmark: prototypes/s of the batched engine against its peers, in one run.

Same model (ResNet18: a protoviz checkpoint, or seeded random weights), layers,
channels and image prior (``fourier``) for every row:

(a) this engine, all channels of a layer batched;
(b) this engine, one channel at a time (same code, batch of one);
(c) the previous pipeline: one pycma CMA-ES per channel, population 40, 100
    generations (``CMA_diagonal`` where the latent has 4096 dimensions or more), the model
    evaluated on each generation's 40 images — on a subset of the channels,
    compared per prototype;
(d) Lucent (torch-lucent 0.1.8) batched: one image per channel, Fourier
    parameterisation with decorrelated colour, the centre-neuron objectives summed
    over the batch, Adam at render_vis's default lr 0.05 (``--lucent-lr``), no
    augmentation transforms (like (a)).

Every row's final images are scored the same way: each channel's centre
activation on its own image. "time to reach" is when (a)'s running mean
activation over the compared channels first reaches that row's final mean, per
prototype; the ratio to the row's own time per prototype is the speed-up.

    pip install --no-deps torch-lucent==0.1.8 && pip install kornia==0.4.1 decorator ipython
    python -m bench.peers.synthesis                       # CPU default: 96 px, 8 channels per layer
    python -m bench.peers.synthesis --device cuda --generator deepsim_fc6 --all-channels
    python -m bench.peers.synthesis --procedure paper --generator deepsim_fc6 --weights upconvGAN_fc6.pt \
        --cma-steps 20 --cma-popsize 30 --cma-sigma 2 \
        --adam-steps 50 --adam-lr 0.01   # P1 at the paper's schedule
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from bench.common import lucent_images
from protoviz_core.engine.generators import make_generator
from protoviz_core.engine.rng import stream_keys
from protoviz_core.engine.synthesis import Procedure, synthesize
from protoviz_core.engine.units import centre_activation, channel_count, layer_reader
from protoviz_core.models.backbones import NORMALIZE, build_backbone
from protoviz_core.training.checkpoints import load_backbone

# configs/paper.yaml's procedure (the authors' code); its schedule is given by the schedule flags.
PAPER_PROCEDURE = dict(
    early_exit=False,
    evolution="fixed_sigma",
    adam_start="mean",
    objective="after_relu",
    precision="float32",
    redraw_dead=False,
)


def score(model, layer, images: torch.Tensor, channels: torch.Tensor, device) -> torch.Tensor:
    """Centre activation (N,) of each channel on its own image (N, 3, S, S) in [0, 1]."""
    mean = torch.tensor(NORMALIZE["mean"], device=device).view(1, 3, 1, 1)
    std = torch.tensor(NORMALIZE["std"], device=device).view(1, 3, 1, 1)
    with torch.no_grad(), layer_reader(model, layer) as read:
        features = read((images.to(device) - mean) / std)
        return centre_activation(features, channels.to(device)).float().cpu()


class Trajectory:
    """(seconds since start, activations (N,)) after every step of :func:`synthesize`."""

    def __init__(self):
        self.points, self.start = [], time.perf_counter()

    def __call__(self, stage, step, activations):
        if stage != "redraw":  # redraw steps report only the silent channels; skipping them is conservative
            self.points.append((time.perf_counter() - self.start, activations.cpu()))

    def time_to_reach(self, target: float, watched: torch.Tensor) -> float:
        """First time the mean over ``watched`` channels reached ``target`` (nan if never)."""
        return next((t for t, acts in self.points if acts[watched].mean() >= target), math.nan)


def run_batched(model, layer, channels, procedure: Procedure, device):
    trajectory = Trajectory()
    started = time.perf_counter()
    result = synthesize(model, layer, channels, procedure, seed=0, device=device, monitor=trajectory)
    return time.perf_counter() - started, result.activations, result.dead, trajectory


def run_one_at_a_time(model, layer, channels, procedure: Procedure, device):
    started = time.perf_counter()
    results = [synthesize(model, layer, [c], procedure, seed=0, device=device) for c in channels.tolist()]
    activations = torch.cat([r.activations for r in results])
    return time.perf_counter() - started, activations, activations <= 0


def run_pycma(model, layer, channels, args, device):
    import cma

    prior = make_generator(args.generator, args.image_size, args.weights).to(device).eval()
    finals = []
    started = time.perf_counter()
    for channel in channels.tolist():
        x0 = prior.sample(stream_keys(0, torch.tensor([channel])))[0].cpu().numpy()
        # Diagonal from 4096-d up (fc6 included): with 4,000 evaluations a full covariance barely
        # adapts there, and its eigendecompositions would only make the peer slower.
        options = {
            "popsize": 40,
            "maxiter": 100,
            "verbose": -9,
            "seed": channel + 1,
            "CMA_diagonal": prior.latent_dim >= 4096,
        }
        es = cma.CMAEvolutionStrategy(x0, args.pycma_sigma, options)
        target = torch.full((40,), channel)
        for _ in range(100):
            samples = es.ask()
            with torch.no_grad():
                images = prior(torch.as_tensor(np.array(samples), dtype=torch.float32, device=device))
            es.tell(samples, (-score(model, layer, images, target, device)).tolist())
        best = torch.as_tensor(es.result.xbest, dtype=torch.float32, device=device)[None]
        with torch.no_grad():
            finals.append(score(model, layer, prior(best), torch.tensor([channel]), device))
    activations = torch.cat(finals)
    return time.perf_counter() - started, activations, activations <= 0


def run_lucent(model, layer, channels, args, device, steps):
    elapsed, final = lucent_images(
        model,
        layer,
        channels,
        args.image_size,
        tuple(sorted({max(1, steps // 4), max(1, steps // 2), steps})),
        device,
        transforms=[],
        optimizer=lambda params: torch.optim.Adam(params, lr=args.lucent_lr),
    )
    activations = score(model, layer, final, channels, device)
    return elapsed, activations, activations <= 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="protoviz checkpoint (default: ResNet18 with seeded random weights)")
    p.add_argument("--layers", default="layer1,layer2,layer3,layer4")
    p.add_argument("--channels", type=int, default=8, help="channels per layer (a, b, d)")
    p.add_argument("--all-channels", action="store_true")
    p.add_argument("--pycma-channels", type=int, default=1, help="channels per layer for (c)")
    p.add_argument("--skip", default="", help="rows to skip, e.g. b,d")
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--generator", default="fourier")
    p.add_argument("--weights", default=None, help="deepsim_fc6 weights file, or 'random'")
    p.add_argument("--cma-steps", type=int, default=10)
    p.add_argument("--cma-popsize", type=int, default=20)
    p.add_argument("--cma-sigma", type=float, default=1.0)
    p.add_argument("--pycma-sigma", type=float, default=1.0)
    p.add_argument("--adam-steps", type=int, default=200)
    p.add_argument("--adam-lr", type=float, default=0.8)
    p.add_argument("--lucent-steps", type=int, default=256)
    p.add_argument(
        "--lucent-lr", type=float, default=0.05, help="Lucent's Adam lr (render_vis's default: 0.05)"
    )
    p.add_argument(
        "--procedure",
        choices=["protoviz", "paper"],
        default="protoviz",
        help="paper: (a)/(b) run the paper authors' procedure (configs/paper.yaml: every generation "
        "and Adam step, fixed step size, Adam from the recombined mean, the unit after its ReLU)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-batch", type=int, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    if args.checkpoint:
        model, _ = load_backbone(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = build_backbone().eval()
    model.to(device)
    budget = ("image_size", "cma_steps", "cma_popsize", "cma_sigma", "adam_steps", "adam_lr", "max_batch")
    procedure = Procedure(
        generator=args.generator,
        generator_weights=args.weights,
        **{name: getattr(args, name) for name in budget},
        **(PAPER_PROCEDURE if args.procedure == "paper" else {}),
    )
    skip = set(args.skip.split(","))
    rows: dict[str, dict] = {}

    def add(name, seconds, activations, dead):
        row = rows.setdefault(name, {"seconds": 0.0, "n": 0, "acts": [], "dead": []})
        row["seconds"] += seconds
        row["n"] += len(activations)
        row["acts"].append(activations)
        row["dead"].append(dead)

    reach = {"c": [], "d": []}  # per layer: (a)'s time per prototype to reach (c) / (d), and theirs
    for layer in args.layers.split(","):
        total = channel_count(model, layer, args.image_size)
        chosen = torch.arange(total) if args.all_channels else torch.arange(min(args.channels, total))
        compared = torch.arange(min(args.pycma_channels, len(chosen)))
        seconds, acts, dead, trajectory = run_batched(model, layer, chosen, procedure, device)
        add("(a) protoviz batched", seconds, acts, dead)
        if "b" not in skip:
            add(
                "(b) protoviz one channel at a time",
                *run_one_at_a_time(model, layer, chosen, procedure, device),
            )
        if "c" not in skip:
            c_seconds, c_acts, c_dead = run_pycma(model, layer, chosen[compared], args, device)
            add("(c) per-channel pycma, pop 40 x 100 gens", c_seconds, c_acts, c_dead)
            reach["c"].append(
                (
                    trajectory.time_to_reach(c_acts.mean().item(), compared) / len(chosen),
                    c_seconds / len(compared),
                    acts[compared].mean().item(),
                    c_acts.mean().item(),
                )
            )
        if "d" not in skip:
            d_seconds, d_acts, d_dead = run_lucent(model, layer, chosen, args, device, args.lucent_steps)
            add("(d) Lucent batched", d_seconds, d_acts, d_dead)
            everyone = torch.arange(len(chosen))
            reach["d"].append(
                (
                    trajectory.time_to_reach(d_acts.mean().item(), everyone) / len(chosen),
                    d_seconds / len(chosen),
                    acts.mean().item(),
                    d_acts.mean().item(),
                )
            )
        print(f"done {layer}", flush=True)

    print(
        f"\nmodel: "
        f"{'checkpoint ' + args.checkpoint if args.checkpoint else 'ResNet18, random weights (seed 0)'}; "
        f"layers {args.layers}; {args.image_size} px; prior {args.generator}; device {device}; "
        f"(a)/(b): CMA {args.cma_steps} x {args.cma_popsize}, sigma {args.cma_sigma}, "
        f"Adam {args.adam_steps} at lr "
        f"{args.adam_lr}; (d): {args.lucent_steps} steps at lr {args.lucent_lr}\n"
    )
    print("| row | prototypes | wall time (s) | prototypes/s | mean act | median act | dead fraction |")
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        acts, dead = torch.cat(row["acts"]), torch.cat(row["dead"])
        print(
            f"| {name} | {row['n']} | {row['seconds']:.1f} | {row['n'] / row['seconds']:.3f} | "
            f"{acts.mean():.3f} | {acts.median():.3f} | {dead.float().mean():.2f} |"
        )
    for peer, label in (("c", "(c) pycma"), ("d", "(d) Lucent")):
        if not reach[peer]:
            continue
        ours = sum(r[0] for r in reach[peer])
        theirs = sum(r[1] for r in reach[peer])
        unreached = [i for i, r in enumerate(reach[peer]) if math.isnan(r[0])]
        print(
            f"\n(a) time per prototype to reach {label}'s mean activation: {ours:.3f} s vs {theirs:.3f} s "
            f"for {label} per prototype -> {theirs / ours:.1f}x sooner"
            + (f" (not reached on layers {unreached})" if unreached else "")
        )
        for layer, (o, t, a_act, p_act) in zip(args.layers.split(","), reach[peer]):
            print(
                f"  {layer}: (a) {o:.3f} s vs {t:.3f} s ({t / o:.1f}x); "
                f"final means (a) {a_act:.3f}, {label} {p_act:.3f}"
            )


if __name__ == "__main__":
    main()
