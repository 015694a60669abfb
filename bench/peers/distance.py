"""Benchmark: the distance stage's computation against a plain BLAS matrix-product peer, same run.

One run at the paper's shape from synthetic embeddings: ResNet18's 960 channels of
layer1-4 (64, 128, 256, 512), 2 repeats, ``--epochs`` epochs (the paper: 101), in
pixel space (96 px: 27,648-d) and one 2048-d embedding, both metrics, masked and
plain. Each side computes every quantity (diversity per repeat, consistency, rate
of change) and runs in its own process so that its peak memory (max RSS) is its own.

The peer is what a researcher would write with numpy: the Gram matrix ``x @ x.T`` in
float32 (one BLAS call per layer, repeat, kind and metric) for the pairwise
distances, row-wise products for the paired ones. protoviz computes diversity in
closed form (O(N D), float64; ``protoviz_core.measures.distance.diversity``). Both sides'
values are compared at the end.

    python -m bench.peers.distance --epochs 3          # CPU-sized
    python -m bench.peers.distance --epochs 101 --device cuda
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time

import numpy as np
import torch

from protoviz_core.measures.distance import epoch_rows

LAYERS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}


def synthetic_epoch(epoch: int, dim: int) -> dict[str, dict[str, torch.Tensor]]:
    """Embeddings of one epoch laid out like the embed stage's files: two repeats, float16."""
    generator = torch.Generator().manual_seed(epoch * 7 + dim)
    return {
        layer: {
            "channels": torch.arange(channels),
            "repeats": torch.tensor([1, 2]),
            **{
                kind: torch.rand(2, channels, dim, generator=generator).half() for kind in ("plain", "masked")
            },
        }
        for layer, channels in LAYERS.items()
    }


def protoviz_epoch(space: str, epoch: int, current: dict, following: dict | None, values: list | None) -> int:
    rows = epoch_rows(space, epoch, current, following)
    if values is not None:
        values += [
            ((r["space"], r["metric"], r["masked"], r["layer"], r["epoch"], r["quantity"]), r["value"])
            for r in rows
        ]
    return len(rows)


def run_side(
    compute, epochs: int, dims: list[int], device: str, values: list | None = None
) -> tuple[int, float]:
    """Feed ``compute`` every (space, epoch) of synthetic embeddings; (values computed, seconds computing).

    Making the synthetic data is not timed: only each side's own computation is.
    """
    count, seconds = 0, 0.0
    for dim in dims:
        following = synthetic_epoch(0, dim)
        for epoch in range(epochs):
            current, following = following, synthetic_epoch(epoch + 1, dim) if epoch + 1 < epochs else None
            if device != "cpu":
                current = {
                    layer: {k: v.to(device) for k, v in part.items()} for layer, part in current.items()
                }
                if following is not None:
                    following = {
                        layer: {k: v.to(device) for k, v in part.items()} for layer, part in following.items()
                    }
                torch.cuda.synchronize()
            started = time.perf_counter()
            count += compute(f"d{dim}", epoch, current, following, values)
            seconds += time.perf_counter() - started
    return count, seconds


def _rowwise(x: np.ndarray, y: np.ndarray, metric: str) -> float:
    """Mean distance between matching rows of x and y (N, D)."""
    if metric == "mse":
        return float(((x - y) ** 2).mean(axis=1).mean())
    cosine = np.einsum("nd,nd->n", x, y) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))
    return float((1 - cosine).mean())


def _mean_pairwise(x: np.ndarray, metric: str) -> float:
    """Mean distance over pairs of different rows, from the Gram matrix (one BLAS call)."""
    n = len(x)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    gram = x @ x.T  # (N, N)
    if metric == "mse":
        squared = np.diag(gram)
        matrix = (squared[:, None] + squared[None, :] - 2 * gram) / x.shape[1]
    else:
        matrix = 1 - gram
    return float((matrix.sum() - np.trace(matrix)) / (n * (n - 1)))


def blas_epoch(space: str, epoch: int, current: dict, following: dict | None, values: list | None) -> int:
    """The same quantities with numpy float32 matrix products (the peer runs on the CPU)."""
    count = 0
    for layer in LAYERS:
        for kind in ("plain", "masked"):
            reps = current[layer][kind].float().cpu().numpy()  # (2, C, D)
            nxt = following[layer][kind].float().cpu().numpy() if following is not None else None
            for metric in ("mse", "cosine"):
                found = {
                    "diversity": np.mean([_mean_pairwise(x, metric) for x in reps]),
                    "consistency": _rowwise(reps[0], reps[1], metric),
                }
                if nxt is not None:
                    found["rate_of_change"] = np.mean([_rowwise(x, y, metric) for x, y in zip(reps, nxt)])
                if values is not None:
                    values += [
                        ((space, metric, kind == "masked", layer, epoch, q), v) for q, v in found.items()
                    ]
                count += len(found)
    return count


def _measure(compute, epochs, dims, device, queue):
    rows, seconds = run_side(compute, epochs, dims, device)
    queue.put((seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rows))


def measure(compute, epochs, dims, device):
    """(seconds computing, peak RSS in MB, values) of one side, in its own process."""
    queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(
        target=_measure, args=(compute, epochs, dims, device, queue)
    )
    process.start()
    result = queue.get()
    process.join()
    return result


def agreement(dims: list[int]) -> float:
    """Largest relative difference between the two sides' values (two epochs, on the CPU)."""
    ours, theirs = [], []
    run_side(protoviz_epoch, 2, dims, "cpu", ours)
    run_side(blas_epoch, 2, dims, "cpu", theirs)
    ours = dict(ours)
    assert ours.keys() == dict(theirs).keys()
    return max(abs(ours[key] - value) / abs(value) for key, value in theirs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=3, help="the paper's run has 101")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    dims = [3 * 96 * 96, 2048]
    results = {
        "protoviz (closed form, torch)": measure(protoviz_epoch, args.epochs, dims, args.device),
        "numpy BLAS matrix products (float32)": measure(blas_epoch, args.epochs, dims, "cpu"),
    }
    print(
        f"{args.epochs} epochs x 960 channels x 2 repeats; spaces {dims[0]}-d (pixel, 96 px) and "
        f"{dims[1]}-d; mse and cosine; masked and plain; device {args.device} (the peer: CPU)\n"
    )
    print("| side | computing (s) | s per epoch | peak RSS (MB) |")
    print("|---|---|---|---|")
    for name, (seconds, rss, _) in results.items():
        print(f"| {name} | {seconds:.1f} | {seconds / args.epochs:.2f} | {rss:.0f} |")
    ours, theirs = results["protoviz (closed form, torch)"], results["numpy BLAS matrix products (float32)"]
    print(
        f"\npeer / protoviz: time {theirs[0] / ours[0]:.1f}x, peak memory {theirs[1] / ours[1]:.2f}x; "
        f"largest relative difference between the sides' values {agreement(dims):.1e}"
    )


if __name__ == "__main__":
    main()
