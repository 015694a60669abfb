"""Benchmark: the distance stage's computation against a scipy cdist loop, same run.

One run at the paper's shape from synthetic embeddings: ResNet18's 960 channels of
layer1-4 (64, 128, 256, 512), 2 repeats, ``--epochs`` epochs (the paper: 101), in
pixel space (96 px: 27,648-d) and one 2048-d embedding, both metrics, masked and
plain. Each side computes every quantity (diversity per repeat, consistency, rate
of change) and runs in its own process so that its peak memory (max RSS) is its own.

    python bench/distance.py --epochs 3          # CPU-sized
    python bench/distance.py --epochs 101 --device cuda
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import numpy as np
import torch
from scipy.spatial.distance import cdist

from protoviz_core.distance import epoch_rows

LAYERS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}


def synthetic_epoch(epoch: int, dim: int) -> dict[str, dict[str, torch.Tensor]]:
    """Embeddings of one epoch laid out like the embed stage's files: two repeats, float16."""
    generator = torch.Generator().manual_seed(epoch * 7 + dim)
    return {layer: {"channels": torch.arange(channels), "repeats": torch.tensor([1, 2]),
                    **{kind: torch.rand(2, channels, dim, generator=generator).half() for kind in ("plain", "masked")}}
            for layer, channels in LAYERS.items()}


def protoviz_side(epochs: int, dims: list[int], device: str) -> int:
    rows = 0
    for dim in dims:
        following = synthetic_epoch(0, dim)
        for epoch in range(epochs):
            current, following = following, synthetic_epoch(epoch + 1, dim) if epoch + 1 < epochs else None
            if device != "cpu":
                current = {layer: {k: v.to(device) for k, v in part.items()} for layer, part in current.items()}
                following = ({layer: {k: v.to(device) for k, v in part.items()} for layer, part in following.items()}
                             if following else None)
            rows += len(epoch_rows(f"d{dim}", epoch, current, following))
    return rows


def _rowwise(x: np.ndarray, y: np.ndarray, metric: str) -> float:
    """Mean distance between matching rows (numpy; cdist has no row-wise mode)."""
    if metric == "mse":
        return float(((x - y) ** 2).mean(axis=1).mean())
    cosine = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return float((1 - cosine).mean())


def scipy_side(epochs: int, dims: list[int], device: str) -> int:
    """The same quantities with one scipy cdist call per (epoch, layer, repeat, kind, metric)."""
    values = 0
    for dim in dims:
        following = synthetic_epoch(0, dim)
        for epoch in range(epochs):
            current, following = following, synthetic_epoch(epoch + 1, dim) if epoch + 1 < epochs else None
            for layer in LAYERS:
                for kind in ("plain", "masked"):
                    reps = [current[f"{layer}/{r}/{kind}"].double().numpy() for r in ("r1", "r2")]
                    for metric, name in (("mse", "sqeuclidean"), ("cosine", "cosine")):
                        for x in reps:  # diversity
                            matrix = cdist(x, x, name) / (dim if metric == "mse" else 1)
                            _ = (matrix.sum() - np.trace(matrix)) / (len(x) * (len(x) - 1))
                        _ = _rowwise(reps[0], reps[1], metric)  # consistency
                        if following is not None:  # rate of change
                            _ = np.mean([_rowwise(x, following[f"{layer}/{r}/{kind}"].double().numpy(), metric)
                                         for r, x in zip(("r1", "r2"), reps)])
                        values += 1
    return values


def _measure(side, epochs, dims, device, queue):
    started = time.perf_counter()
    rows = side(epochs, dims, device)
    queue.put((time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rows))


def measure(side, epochs, dims, device):
    queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(target=_measure, args=(side, epochs, dims, device, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="the paper's run has 101")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    dims = [3 * 96 * 96, 2048]
    results = {"protoviz (torch matrices)": measure(protoviz_side, args.epochs, dims, args.device),
               "scipy cdist loop": measure(scipy_side, args.epochs, dims, args.device)}
    print(f"{args.epochs} epochs x 960 channels x 2 repeats; spaces {dims[0]}-d (pixel, 96 px) and "
          f"{dims[1]}-d; mse and cosine; masked and plain; device {args.device}\n")
    print("| side | wall time (s) | s per epoch | peak RSS (MB) |")
    print("|---|---|---|---|")
    for name, (seconds, rss, _) in results.items():
        print(f"| {name} | {seconds:.1f} | {seconds / args.epochs:.2f} | {rss:.0f} |")
    ours, theirs = results["protoviz (torch matrices)"], results["scipy cdist loop"]
    print(f"\nscipy / protoviz: time {theirs[0] / ours[0]:.1f}x, peak memory {theirs[1] / ours[1]:.2f}x; "
          f"101 epochs would take {ours[0] / args.epochs * 101:.0f} s (protoviz) and "
          f"{theirs[0] / args.epochs * 101:.0f} s (scipy) here")


if __name__ == "__main__":
    main()
