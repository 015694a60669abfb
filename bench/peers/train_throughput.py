"""Benchmark: images/s of protoviz's SimCLR training against a bare PyTorch loop.

Both sides train the same model (ResNet18 + projection head, NT-Xent) on the same
synthetic images with the same augmentation, batch size and DataLoader workers, in
the same process, alternating, so machine noise hits both. protoviz's side is the
whole ``train_learner`` call the train stage makes: seeding, progress bar, an atomic
checkpoint and resume state after every epoch. The bare side is the loop a
researcher would write by hand, with nothing saved.

    python -m bench.peers.train_throughput                 # CPU, demo scale
    python -m bench.peers.train_throughput --stl10-scale   # 96 px, 100,000 images (GPU)

Prints one markdown table; ratio = bare images/s / protoviz images/s (target <= 1.2).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightly.loss import NTXentLoss

from protoviz_core.data.synthetic import generate_images
from protoviz_core.infra.devices import resolve_device
from protoviz_core.models.backbones import build_backbone
from protoviz_core.models.learners import SimCLRLearner, view_transform
from protoviz_core.pipeline.config import TrainParams
from protoviz_core.training.loop import train_learner
from protoviz_core.training.views import Views


def bare_loop(images: np.ndarray, config: TrainParams, image_size: int) -> float:
    """A hand-written SimCLR loop; returns images/s over ``config.epochs`` epochs."""
    device = resolve_device(config.device)
    torch.manual_seed(0)
    model = SimCLRLearner(build_backbone()).to(device)
    use_amp = device.type == "cuda"
    if use_amp:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    criterion = NTXentLoss(temperature=config.temperature)
    loader = torch.utils.data.DataLoader(
        Views(images, view_transform("simclr", "clrjit", image_size)),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=config.num_workers,
        pin_memory=use_amp,
    )
    seen = 0
    started = time.perf_counter()
    for _ in range(config.epochs):
        for (view_a, view_b), _ in loader:
            views = torch.cat([view_a, view_b]).to(device, non_blocking=True)
            if use_amp:
                views = views.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                z_a, z_b = (z.float() for z in model([views]))
            loss = criterion(z_a, z_b)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(view_a)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def protoviz_stage(images: np.ndarray, config: TrainParams, image_size: int) -> float:
    """The train stage's training call, checkpoints included; returns images/s."""
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        result = train_learner(
            images,
            config,
            aug="clrjit",
            seed=0,
            image_size=image_size,
            checkpoint_dir=Path(scratch) / "checkpoints",
            state_path=Path(scratch) / "state.pt",
            training_hash="bench",
            device=resolve_device(config.device),
            log=lambda message: None,
        )
        elapsed = time.perf_counter() - started
    steps = len(images) // config.batch_size
    assert result.trained_epochs == list(range(1, config.epochs + 1))
    return config.epochs * steps * config.batch_size / elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stl10-scale", action="store_true", help="96 px, 100,000 images, batch 256")
    p.add_argument("--image-size", type=int, default=48)
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="alternating rounds per side")
    args = p.parse_args()
    if args.stl10_scale:
        args.image_size, args.images, args.batch_size, args.epochs = 96, 100_000, 256, 1
    rng = np.random.default_rng(0)
    images = generate_images(rng.integers(0, 10, args.images), args.image_size, rng)
    config = TrainParams(epochs=args.epochs, batch_size=args.batch_size, num_workers=args.workers)

    rates: dict[str, list[float]] = {"bare PyTorch loop": [], "protoviz train stage": []}
    for _ in range(args.repeats):
        rates["bare PyTorch loop"].append(bare_loop(images, config, args.image_size))
        rates["protoviz train stage"].append(protoviz_stage(images, config, args.image_size))

    device = resolve_device("auto")
    name = (
        torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    )
    bare = max(rates["bare PyTorch loop"])
    print(
        f"device: {name}; {args.images} images at {args.image_size} px, batch {args.batch_size}, "
        f"{args.epochs} epoch(s), {args.workers} workers, best of {args.repeats}"
    )
    print("| side | images/s | ratio (bare / side) | epoch time for these images (s) |")
    print("|---|---|---|---|")
    for side, values in rates.items():
        best = max(values)
        print(f"| {side} | {best:.1f} | {bare / best:.2f} | {args.images / best:.1f} |")


if __name__ == "__main__":
    main()
