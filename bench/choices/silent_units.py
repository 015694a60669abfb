"""Benchmark: how many channels the engine brings alive on networks it was not tuned for.

A new user's case: a randomly initialised torchvision classification network (not
ResNet18, which the engine's defaults were chosen on), 16 evenly spaced channels of a
mid-depth layer, the ``fourier`` prior at 64 px and the demo's budget (params.yaml:
5 generations of 12 samples, sigma 1, then 30 Adam steps at lr 0.8).

For each network, side by side on the same channels and seeds:

- "score" is the engine as it is: it maximises each unit's value with the last ReLU on
  its path left out (:func:`protoviz_core.engine.units.unit_reader`): the layer's own final
  ReLU, or for a layer that ends in a max pool after a ReLU, the pool of the values
  before that ReLU;
- "activation" is the same engine maximising the activation itself
  (``objective="after_relu"``, the paper authors' code), for comparison.

A channel counts as alive when its prototype's centre activation is above 0. For
every channel left dead, 256 uniform-noise images are tried: "noise drives" counts
dead channels that one of them drives above 0 (the target is none).

    python -m bench.choices.silent_units            # about 3 minutes on a 2-core CPU
"""

from __future__ import annotations

import argparse
import time

import torch
import torchvision

from protoviz_core.engine.synthesis import Procedure, synthesize
from protoviz_core.engine.units import channel_count, layer_reader, spaced_channels
from protoviz_core.models.backbones import NORMALIZE

# (torchvision name, a mid-depth layer whose output ends with a ReLU or ReLU6)
NETWORKS = [
    ("vgg16", "features.15"),
    ("resnet50", "layer2"),
    ("densenet121", "features.denseblock2.denselayer6.relu2"),
    ("mobilenet_v2", "features.7.conv.0"),
    ("regnet_y_400mf", "trunk_output.block2"),
]
# (torchvision name, a layer that does not end in a ReLU: a max pool after one)
POOLING = [
    ("vgg11", "features.10"),
    ("vgg16", "features.16"),
    ("alexnet", "features.5"),
    ("densenet121", "features.pool0"),
    ("resnet50", "maxpool"),
]
# GoogLeNet's blocks apply torch.nn.functional.relu inside their modules' code: no ReLU module to read
# before, so the engine has no surrogate there (shown as it is).
FUNCTIONAL = [("googlenet", "inception3a")]
DEMO_BUDGET = dict(cma_steps=5, cma_popsize=12, cma_sigma=1.0, adam_steps=30, adam_lr=0.8)


def noise_drives(model, layer, channels: torch.Tensor, image_size: int, samples: int = 256) -> torch.Tensor:
    """(N,) bool: some uniform-noise image drives the channel's centre unit above 0."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(samples, 3, image_size, image_size, generator=generator)
    mean, std = (torch.tensor(NORMALIZE[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    best = torch.full((len(channels),), -float("inf"))
    with torch.no_grad(), layer_reader(model, layer) as read:
        for start in range(0, samples, 32):
            features = read((noise[start : start + 32] - mean) / std)  # (b, C, h, w)
            h, w = features.shape[2:]
            centre = features[:, channels, (h - 1) // 2, (w - 1) // 2]  # (b, N)
            best = torch.maximum(best, centre.max(dim=0).values)
    return best > 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--only", choices=["relu", "pooling", "functional"], default=None)
    parser.add_argument("--layer", default=None, help="one NETWORK:LAYER instead, e.g. vgg11:features.10")
    parser.add_argument("--cma-steps", type=int, default=DEMO_BUDGET["cma_steps"])
    parser.add_argument("--cma-popsize", type=int, default=DEMO_BUDGET["cma_popsize"])
    parser.add_argument("--adam-steps", type=int, default=DEMO_BUDGET["adam_steps"])
    parser.add_argument("--adam-lr", type=float, default=DEMO_BUDGET["adam_lr"])
    args = parser.parse_args()
    budget = dict(
        DEMO_BUDGET,
        cma_steps=args.cma_steps,
        cma_popsize=args.cma_popsize,
        adam_steps=args.adam_steps,
        adam_lr=args.adam_lr,
    )
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    rows = []
    chosen = {"relu": NETWORKS, "pooling": POOLING, "functional": FUNCTIONAL}
    plan = (
        [tuple(args.layer.split(":", 1))]
        if args.layer
        else (chosen[args.only] if args.only else NETWORKS + POOLING + FUNCTIONAL)
    )
    for name, layer in plan:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        channels = spaced_channels(channel_count(model, layer, args.image_size), args.channels)
        row = {"network": name, "layer": layer}
        for label, objective in (("score", "before_relu"), ("activation", "after_relu")):
            started = time.perf_counter()
            procedure = Procedure(
                generator="fourier", image_size=args.image_size, objective=objective, **budget
            )
            result = synthesize(model, layer, channels, procedure, seed=0)
            seconds = time.perf_counter() - started
            dead = result.dead
            drivable = (
                noise_drives(model, layer, channels[dead], args.image_size) if dead.any() else torch.zeros(0)
            )
            row[label] = (int((~dead).sum()), len(channels), int(drivable.sum()), seconds)
        rows.append(row)
        print(name, row, flush=True)

    print(
        f"\n{args.channels} evenly spaced channels, fourier prior, {args.image_size} px, "
        f"{budget['cma_steps']} x {budget['cma_popsize']} evolution, {budget['adam_steps']} Adam steps at lr "
        f"{budget['adam_lr']}\n"
    )
    print(
        "| network | layer | alive, score (engine) | dead that noise drives | alive, activation (before) "
        "| dead that noise drives | seconds (score / activation) |"
    )
    print("|---|---|---|---|---|---|---|")
    totals = {"score": [0, 0], "activation": [0, 0]}
    for row in rows:
        cells = []
        for label in ("score", "activation"):
            alive, count, drivable, _ = row[label]
            totals[label][0] += alive
            totals[label][1] += count
            cells += [f"{alive}/{count}", str(drivable)]
        print(
            f"| {row['network']} | `{row['layer']}` | {' | '.join(cells)} | "
            f"{row['score'][3]:.1f} / {row['activation'][3]:.1f} |"
        )
    for label, (alive, count) in totals.items():
        print(f"\n{label}: {alive}/{count} alive = {alive / count:.1%}", end="")
    print()


if __name__ == "__main__":
    main()
