"""Benchmark: how many channels the engine brings alive on networks it was not tuned for.

A new user's case: a randomly initialised torchvision classification network (not
ResNet18, which the engine's defaults were chosen on), 16 evenly spaced channels of a
mid-depth layer, the ``fourier`` prior at 64 px and the demo's budget (params.yaml:
5 generations of 12 samples, sigma 1, then 30 Adam steps at lr 0.8).

For each network, side by side on the same channels and seeds:

- "score" is the engine as it is: it maximises each unit's value before the layer's
  final ReLU (:func:`protoviz_core.units.unit_reader`);
- "activation" is the same engine maximising the activation after the ReLU (how it
  worked before), for comparison.

A channel counts as alive when its prototype's centre activation is above 0. For
every channel left dead, 256 uniform-noise images are tried: "noise drives" counts
dead channels that one of them drives above 0 (the target is none).

    python bench/silent_units.py            # about 3 minutes on a 2-core CPU
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torchvision

import protoviz_core.synthesis as synthesis
from protoviz_core.simclr import NORMALIZE
from protoviz_core.units import centre_activation, channel_count, layer_reader, spaced_channels

# (torchvision name, a mid-depth layer whose output ends with a ReLU or ReLU6)
NETWORKS = [
    ("vgg16", "features.15"),
    ("resnet50", "layer2"),
    ("densenet121", "features.denseblock2.denselayer6.relu2"),
    ("mobilenet_v2", "features.7.conv.0"),
    ("regnet_y_400mf", "trunk_output.block2"),
]
DEMO_BUDGET = dict(cma_steps=5, cma_popsize=12, cma_sigma=1.0, adam_steps=30, adam_lr=0.8)


@contextlib.contextmanager
def activation_objective():
    """The engine maximising the activation itself (score = activation), as before."""
    real = synthesis.unit_reader

    @contextlib.contextmanager
    def reader(model, layer):
        with layer_reader(model, layer) as read:
            def both(images):
                output = read(images)
                return output, output
            yield both

    synthesis.unit_reader = reader
    try:
        yield
    finally:
        synthesis.unit_reader = real


def noise_drives(model, layer, channels: torch.Tensor, image_size: int, samples: int = 256) -> torch.Tensor:
    """(N,) bool: some uniform-noise image drives the channel's centre unit above 0."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(samples, 3, image_size, image_size, generator=generator)
    mean, std = (torch.tensor(NORMALIZE[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    best = torch.full((len(channels),), -float("inf"))
    with torch.no_grad(), layer_reader(model, layer) as read:
        for start in range(0, samples, 32):
            features = read((noise[start:start + 32] - mean) / std)  # (b, C, h, w)
            h, w = features.shape[2:]
            centre = features[:, channels, (h - 1) // 2, (w - 1) // 2]  # (b, N)
            best = torch.maximum(best, centre.max(dim=0).values)
    return best > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    rows = []
    for name, layer in NETWORKS:
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None).eval()
        channels = spaced_channels(channel_count(model, layer, args.image_size), args.channels)
        row = {"network": name, "layer": layer}
        for label, objective in (("score", contextlib.nullcontext), ("activation", activation_objective)):
            started = time.perf_counter()
            with objective():
                result = synthesis.synthesize(model, layer, channels, generator="fourier",
                                              image_size=args.image_size, seed=0, **DEMO_BUDGET)
            seconds = time.perf_counter() - started
            dead = result.dead
            drivable = noise_drives(model, layer, channels[dead], args.image_size) if dead.any() else torch.zeros(0)
            row[label] = (int((~dead).sum()), len(channels), int(drivable.sum()), seconds)
        rows.append(row)
        print(name, row, flush=True)

    print(f"\n{args.channels} evenly spaced channels, fourier prior, {args.image_size} px, demo budget "
          f"({DEMO_BUDGET['cma_steps']} x {DEMO_BUDGET['cma_popsize']} evolution, {DEMO_BUDGET['adam_steps']} Adam steps)\n")
    print("| network | layer | alive, score (engine) | dead that noise drives | alive, activation (before) "
          "| dead that noise drives | seconds (score / activation) |")
    print("|---|---|---|---|---|---|---|")
    totals = {"score": [0, 0], "activation": [0, 0]}
    for row in rows:
        cells = []
        for label in ("score", "activation"):
            alive, count, drivable, _ = row[label]
            totals[label][0] += alive
            totals[label][1] += count
            cells += [f"{alive}/{count}", str(drivable)]
        print(f"| {row['network']} | `{row['layer']}` | {' | '.join(cells)} | "
              f"{row['score'][3]:.1f} / {row['activation'][3]:.1f} |")
    for label, (alive, count) in totals.items():
        print(f"\n{label}: {alive}/{count} alive = {alive / count:.1%}", end="")
    print()


if __name__ == "__main__":
    main()
