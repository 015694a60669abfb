"""Benchmark: a nearest-units query at the paper's scale, against numpy's BLAS brute force.

The study holds 1,163,520 prototypes (6 runs x 101 checkpoints x 960 units x 2 repeats). Here
every one gets a vector of ``--dim`` values (2048: a ResNet50 embedding, the paper's first
network), random, as the query's time depends on the matrix's size, not on its values.

- protoviz: :class:`protoviz_core.measures.neighbours.UnitIndex` (float16 rows, one torch
  matrix-vector product, top-k);
- the peer: the whole matrix in float32 in numpy, ``X @ q`` (BLAS) and ``argpartition``, as a
  numpy user would write it.

Both give the same k units (checked). Prints the median of ``--queries`` queries each, the
ratio, and both matrices' memory.

    python -m bench.peers.nearest_units
    python -m bench.peers.nearest_units --rows 100000 --dim 512 --queries 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd
import torch

from protoviz_core.measures.neighbours import UnitIndex

STUDY_PROTOTYPES = 6 * 101 * 960 * 2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=STUDY_PROTOTYPES)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--queries", type=int, default=10)
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()

    generator = torch.Generator().manual_seed(0)
    vectors = torch.empty(args.rows, args.dim, dtype=torch.float16)
    for start in range(0, args.rows, 1 << 16):
        block = torch.randn(min(1 << 16, args.rows - start), args.dim, generator=generator)
        vectors[start : start + len(block)] = block.half()
    labels = pd.DataFrame({"row": np.arange(args.rows)})
    index = UnitIndex.__new__(UnitIndex)  # the vectors are unit-free random: normalise in place, chunked
    index.units = labels
    for start in range(0, args.rows, 1 << 16):
        chunk = vectors[start : start + (1 << 16)].float()
        vectors[start : start + len(chunk)] = torch.nn.functional.normalize(chunk, dim=1).half()
    index.vectors = vectors
    peer = vectors.float().numpy()  # what a numpy user holds: float32

    rows = np.random.default_rng(1).choice(args.rows, size=args.queries, replace=False)
    ours, theirs = [], []
    for row in rows:
        started = time.perf_counter()
        found = index.nearest(int(row), k=args.k)
        ours.append(time.perf_counter() - started)

        started = time.perf_counter()
        scores = peer @ peer[row]
        scores[row] = -np.inf
        top = np.argpartition(-scores, args.k)[: args.k]
        top = top[np.argsort(-scores[top])]
        theirs.append(time.perf_counter() - started)
        assert set(found.row) == set(top.tolist()), "the two queries disagree"

    mine, peer_time = statistics.median(ours), statistics.median(theirs)
    print("| rows x dim | protoviz UnitIndex (float16) s/query | numpy float32 BLAS s/query | ratio | GB |")
    print("|---|---|---|---|---|")
    print(
        f"| {args.rows:,} x {args.dim} | {mine:.3f} | {peer_time:.3f} | {mine / peer_time:.2f} | "
        f"{vectors.numel() * 2 / 1e9:.1f} vs {peer.nbytes / 1e9:.1f} |"
    )


if __name__ == "__main__":
    main()
