"""Benchmark: the gradient stage's learning rate for the `fourier` prior at the demo's budget.

For each learning rate, the engine synthesises prototypes for evenly spaced channels of
layer1-4 of one checkpoint with the demo's extract schedule (params.yaml) and reports
each layer's mean final activation and the wall time; the same seeds for every rate.
Adam's step is about ``lr`` latent units per coordinate whatever the gradient's scale,
so the rate is a property of the prior's parameterisation (checked here on a trained
and an untrained network), not of one network.

    python -m bench.choices.adam_lr --checkpoint out/checkpoints/epoch_0005.pt
    python -m bench.choices.adam_lr                      # ResNet18 with seeded random weights
"""

from __future__ import annotations

import argparse
import time

import torch

from protoviz_core.engine.synthesis import Procedure, synthesize
from protoviz_core.engine.units import channel_count, spaced_channels
from protoviz_core.models.backbones import NORMALIZE, build_backbone
from protoviz_core.pipeline.config import load_params
from protoviz_core.training.checkpoints import load_backbone


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="protoviz checkpoint (default: ResNet18 with seeded random weights)")
    p.add_argument("--params", default="params.yaml", help="the extract schedule and image size to use")
    p.add_argument("--rates", default="0.05,0.1,0.2,0.4")
    p.add_argument("--channels", type=int, default=8, help="evenly spaced channels per layer")
    args = p.parse_args()
    params = load_params(args.params)
    x, size = params.extract, params.data.image_size
    if args.checkpoint:
        model, meta = load_backbone(args.checkpoint)
        normalize = meta["normalize"]
    else:
        torch.manual_seed(0)
        model, normalize = build_backbone().eval(), NORMALIZE
    print(
        f"{args.checkpoint or 'ResNet18, random weights (seed 0)'}; {size} px; fourier; CMA {x.cma_steps} x "
        f"{x.cma_popsize}, sigma {x.cma_sigma}; {x.adam_steps} Adam steps; "
        f"{args.channels} channels per layer\n"
    )
    layers = list(x.layers)
    print("| Adam lr | " + " | ".join(f"{layer} mean act" for layer in layers) + " | seconds |")
    print("|---" * (len(layers) + 2) + "|")
    for rate in (float(r) for r in args.rates.split(",")):
        started, means = time.perf_counter(), []
        for layer in layers:
            channels = spaced_channels(channel_count(model, layer, size), args.channels)
            procedure = Procedure(
                generator="fourier",
                image_size=size,
                cma_steps=x.cma_steps,
                cma_popsize=x.cma_popsize,
                cma_sigma=x.cma_sigma,
                adam_steps=x.adam_steps,
                adam_lr=rate,
                normalize=normalize,
            )
            result = synthesize(model, layer, channels, procedure, seed=0, device="cpu")
            means.append(result.activations.mean().item())
        print(
            f"| {rate:g} | "
            + " | ".join(f"{m:.2f}" for m in means)
            + f" | {time.perf_counter() - started:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
