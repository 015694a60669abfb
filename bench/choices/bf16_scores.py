"""What the GPU path's bfloat16 autocast does to unit scores, prototypes, distances and the
superstimulus ratio.

On a GPU the engine runs the generator and the network under bfloat16 autocast; on the
CPU in float32. This measures the difference on the CPU, with the demo's trained
checkpoint (``make demo`` first), at the demo's extract settings (8 evenly spaced
channels per layer, fourier prior, 5 x 12 evolution, 30 Adam steps at lr 0.8, 48 px):

1. **scores**: the centre score of each layer's channels on the same images (12 start
   samples per channel, as one CMA-ES generation), float32 against bfloat16 autocast
   with channels_last: relative error, ties within a generation, and how often the
   top half (the samples CMA-ES recombines) differs;
2. **prototypes**: the engine's GPU path (bfloat16, frozen loops, memory sizing; on the
   suite's fake CUDA device, tests/fake_cuda.py) against its CPU path, same seeds. Each
   prototype's activation is recomputed in float32 from its stored image and divided by
   the highest activation of its unit over the test images (the superstimulus ratio);
   the pixel MSE between the two paths' prototypes of a channel is set beside the
   re-evolution distance (two float32 runs with different seeds) and the diversity;
3. **embedding distances**: the diversity (MSE and cosine) of the float32 prototypes in
   the demo's embedding network (mobilenet_v2, random weights), embedded in float32
   and under CPU bfloat16 autocast (close to what the embed stage did on a GPU before it
   kept float32; CPU and CUDA autocast cast not quite the same operations).

    python -m bench.choices.bf16_scores            # about 3 minutes on 2 cores; a markdown table
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from protoviz_core.data.stl10 import read_images
from protoviz_core.engine.generators import make_generator
from protoviz_core.engine.rng import stream_keys
from protoviz_core.engine.synthesis import Procedure, stream_seed, synthesize
from protoviz_core.engine.units import centre_activation, channel_count, spaced_channels, unit_reader
from protoviz_core.measures.distance import epoch_rows
from protoviz_core.measures.embedding import embed_images, load_network
from protoviz_core.training.checkpoints import load_backbone
from tests.fake_cuda import fake_cuda

ROOT = Path(__file__).resolve().parents[2]

LAYERS = ("layer1", "layer2", "layer3", "layer4")
SCHEDULE = dict(generator="fourier", cma_steps=5, cma_popsize=12, cma_sigma=1.0, adam_steps=30, adam_lr=0.8)


def unit_scores(
    model, layer, images, channels, normalize, *, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, 3, S, S) in [0, 1], channels (B,) -> float32 (B,) scores and activations."""
    mean = torch.tensor(normalize["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(normalize["std"]).view(1, 3, 1, 1)
    normalised = (images - mean) / std
    if bf16:
        normalised = normalised.contiguous(memory_format=torch.channels_last)
    with (
        torch.no_grad(),
        unit_reader(model, layer) as read,
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
    ):
        output, before = read(normalised)
        return centre_activation(before, channels).float(), centre_activation(output, channels).float()


def natural_maxima(model, layer, images: np.ndarray, channels, normalize) -> torch.Tensor:
    """(C,) the highest float32 activation of each channel over uint8 images (N, 3, S, S)."""
    best = torch.full((len(channels),), -float("inf"))
    for start in range(0, len(images), 250):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + 250])).float() / 255
        wanted = channels.repeat(len(batch), 1)  # (B, C)
        stacked = batch.repeat_interleave(len(channels), dim=0)  # (B*C, 3, S, S)
        _, activation = unit_scores(model, layer, stacked, wanted.flatten(), normalize, bf16=False)
        best = torch.maximum(best, activation.view(len(batch), -1).max(dim=0).values)
    return best


def score_resolution(model, layer, channels, image_size, normalize) -> dict:
    prior = make_generator("fourier", image_size)
    popsize = SCHEDULE["cma_popsize"]
    keys = stream_keys(stream_seed(1, "evolution"), channels)
    codes = torch.stack([prior.sample(keys, step=step) for step in range(popsize)], dim=1)  # (C, P, d)
    with torch.no_grad():
        images = prior(codes.flatten(end_dim=1))
    index = channels.repeat_interleave(popsize)
    exact, _ = unit_scores(model, layer, images, index, normalize, bf16=False)
    rounded, _ = unit_scores(model, layer, images, index, normalize, bf16=True)
    relative = (rounded - exact).abs() / exact.abs().clamp(min=1e-6)
    exact, rounded = exact.view(-1, popsize), rounded.view(-1, popsize)
    half = popsize // 2
    top_exact = exact.topk(half, dim=1).indices.sort(dim=1).values
    top_rounded = rounded.topk(half, dim=1).indices.sort(dim=1).values
    ties = sum(len(row) - len(torch.unique(row)) for row in rounded)
    return {
        "median relative error": float(relative.median()),
        "max relative error": float(relative.max()),
        "generations whose top half differs": float((top_exact != top_rounded).any(dim=1).float().mean()),
        "tied samples per generation": ties / len(rounded),
    }


def pixel_mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b) ** 2).flatten(start_dim=1).mean(dim=1).mean())


def diversity(images: torch.Tensor, metric: str) -> float:
    vectors = {
        "layer": {
            "channels": torch.arange(len(images)),
            "repeats": torch.tensor([1]),
            "plain": images.flatten(start_dim=1)[None],
            "masked": images.flatten(start_dim=1)[None],
        }
    }
    rows = epoch_rows("x", 0, vectors, None)
    return next(
        r["value"] for r in rows if r["metric"] == metric and not r["masked"] and r["quantity"] == "diversity"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", default=str(ROOT / "out/checkpoints/epoch_0005.pt"))
    parser.add_argument("--data", default=str(ROOT / "data/stl10_binary"))
    parser.add_argument("--channels", type=int, default=8)
    args = parser.parse_args()
    model, meta = load_backbone(args.checkpoint)
    size, normalize = meta["image_size"], meta["normalize"]
    test_images = read_images(args.data, "test", size)
    network = load_network("mobilenet_v2", "random")
    started = time.perf_counter()
    print(
        f"\n{time.strftime('%Y-%m-%d')}, `python -m bench.choices.bf16_scores` "
        f"on {Path(args.checkpoint).name}, "
        f"{size} px, {args.channels} channels per layer, {len(test_images)} test images\n"
    )
    print(
        "| layer | score error (median / max) | CMA-ES top half differs | ties per generation | "
        "ratio f32 / bf16 path (median) | prototype MSE bf16 vs f32 | re-evolution MSE (f32) | diversity MSE "
        "| embedding diversity bf16 / f32 - 1 (mse, cosine) |"
    )
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    for layer in LAYERS:
        channels = spaced_channels(channel_count(model, layer, size), args.channels)
        resolution = score_resolution(model, layer, channels, size, normalize)
        best = natural_maxima(model, layer, test_images, channels, normalize)
        procedure = Procedure(image_size=size, **SCHEDULE)
        exact = synthesize(model, layer, channels, procedure, seed=1, device="cpu")
        again = synthesize(model, layer, channels, procedure, seed=2, device="cpu")
        with fake_cuda():
            rounded = synthesize(model, layer, channels, procedure, seed=1, device="cuda")
        ratios = {}
        for name, result in (("f32", exact), ("bf16", rounded)):
            _, activation = unit_scores(model, layer, result.images, channels, normalize, bf16=False)
            ratios[name] = float((activation / best).median())
        embedded = {}
        for bf16 in (False, True):
            uint8 = (exact.images * 255).round().to(torch.uint8)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                vectors = embed_images(uint8, "mobilenet_v2", network=network, device="cpu")
            embedded[bf16] = [diversity(vectors, metric) for metric in ("mse", "cosine")]
        change = [embedded[True][i] / embedded[False][i] - 1 for i in range(2)]
        print(
            f"| {layer} | {resolution['median relative error']:.2%} / "
            f"{resolution['max relative error']:.1%} | "
            f"{resolution['generations whose top half differs']:.0%} | "
            f"{resolution['tied samples per generation']:.2f} | "
            f"{ratios['f32']:.2f} / {ratios['bf16']:.2f} | {pixel_mse(rounded.images, exact.images):.4f} | "
            f"{pixel_mse(again.images, exact.images):.4f} | {diversity(exact.images, 'mse'):.4f} | "
            f"{change[0]:+.2%}, {change[1]:+.2%} |",
            flush=True,
        )
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
