"""The units most like a given one, across epochs and runs: cosine similarity of one vector per unit.

Two kinds of vector, each its own index:

- a unit's prototypes, embedded (the embed stage's ``out/embeddings/<space>/eXXXX.pt``; the mean
  over repeats, RF-masked or plain): units that *look* alike;
- a unit's activations on the similarity stage's held-out images (``out/similarity/eXXXX.pt``),
  centred, so that the cosine is their correlation: units that *respond* alike, as
  :func:`protoviz_core.measures.similarity.unit_correlations` matches them.

:class:`UnitIndex` answers a query by brute force, one matrix-vector product over a float16
matrix (half the memory of float32, and on the CPU as fast), then rescores the best
candidates in float32: no index to build or keep, the same units as a float32 search of the
stored vectors (checked at 1.16 M rows in ``bench/peers/nearest_units.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from protoviz_core.infra.work import read_result

RESCORE_MARGIN = 64  # candidates beyond k rescored in float32 (float16 errors are about 1e-4)


class UnitIndex:
    """Unit vectors with a label row each, for k-nearest queries by cosine similarity.

    Args:
        vectors: (M, D), one per unit; normalised here, stored as float16.
        units: M rows naming each vector (e.g. run, epoch, layer, channel).
    """

    def __init__(self, vectors: torch.Tensor, units: pd.DataFrame):
        if len(vectors) != len(units):
            raise ValueError(f"{len(vectors)} vectors for {len(units)} units")
        self.units = units.reset_index(drop=True)
        self.vectors = torch.nn.functional.normalize(vectors.float(), dim=1).half()

    @classmethod
    def concat(cls, indices: Sequence[UnitIndex]) -> UnitIndex:
        """One index over several (e.g. one per run)."""
        joined = cls.__new__(cls)
        joined.units = pd.concat([i.units for i in indices], ignore_index=True)
        joined.vectors = torch.cat([i.vectors for i in indices])
        return joined

    def __len__(self) -> int:
        return len(self.vectors)

    def find(self, **labels) -> int:
        """The row of the one unit whose labels equal ``labels`` (e.g. ``epoch=5, layer="layer3",
        channel=17``). Raises KeyError when none or several match."""
        match = self.units.index[(self.units[list(labels)] == pd.Series(labels)).all(axis=1)]
        if len(match) != 1:
            raise KeyError(f"{len(match)} units match {labels}")
        return int(match[0])

    def nearest(self, row: int, k: int = 10) -> pd.DataFrame:
        """The ``k`` units most similar to unit ``row`` (itself left out), most similar first:
        its label columns and ``similarity`` (cosine, -1..1, to float16's precision)."""
        query = self.vectors[row]
        rough = (self.vectors @ query).float()  # float16 product: as fast as float32 on the CPU
        rough[row] = -float("inf")
        # float16's rounding can swap units near the k-th: rescore a margin of candidates in float32.
        candidates = rough.topk(min(k + RESCORE_MARGIN, len(rough) - 1)).indices
        exact = self.vectors[candidates].float() @ query.float()
        values, order = exact.topk(min(k, len(candidates)))
        chosen = candidates[order].numpy()
        return self.units.iloc[chosen].assign(similarity=values.numpy()).reset_index(drop=True)

    def nearest_each(self, rows: Sequence[int], k: int = 10, chunk: int = 65536) -> pd.DataFrame:
        """:meth:`nearest` for many units at once: one matrix product per ``chunk`` stored rows
        (float32, so the result is the rescored one without a margin), a running top-k per query.
        For the atlas's many queries, where a product per query would scan the index that often.

        Returns:
            Rows ``query`` (the row asked about), the found unit's label columns and
            ``similarity``; per query most similar first, the query itself left out.
        """
        rows = list(rows)
        if not rows:
            return pd.DataFrame(columns=["query", *self.units.columns, "similarity"])
        queries = self.vectors[rows].float()  # (Q, D)
        keep = min(k, len(self) - 1)
        best_values = torch.full((len(queries), 0), -float("inf"))
        best_rows = torch.zeros((len(queries), 0), dtype=torch.long)
        for start in range(0, len(self), chunk):
            scores = queries @ self.vectors[start : start + chunk].float().T  # (Q, chunk)
            for q, row in enumerate(rows):
                if start <= row < start + chunk:
                    scores[q, row - start] = -float("inf")
            values = torch.cat([best_values, scores], dim=1)
            chunk_rows = torch.arange(start, start + scores.shape[1]).expand_as(scores)
            found = torch.cat([best_rows, chunk_rows], dim=1)
            best_values, order = values.topk(min(keep, values.shape[1]), dim=1)
            best_rows = found.gather(1, order)
        frames = [
            self.units.iloc[best_rows[q].numpy()].assign(query=row, similarity=best_values[q].numpy())
            for q, row in enumerate(rows)
        ]
        found = pd.concat(frames, ignore_index=True)
        return found[["query", *self.units.columns, "similarity"]]


def _epoch_files(folder: Path) -> dict[int, dict]:
    found = {}
    for path in sorted(Path(folder).glob("e[0-9][0-9][0-9][0-9].pt")):
        contents = read_result(path, mmap=False)
        if contents is not None:
            found[int(path.stem[1:])] = contents
    return found


def prototype_index(embeddings: str | Path, space: str, *, masked: bool = True, run: str = "") -> UnitIndex:
    """Every unit of every epoch of one run, by its prototypes' embedding in ``space`` (mean over
    repeats) from the embed stage's folder ``embeddings``; labels run, epoch, layer, channel."""
    vectors, rows = [], []
    for epoch, contents in _epoch_files(Path(embeddings) / space).items():
        for layer, parts in contents.items():
            if not isinstance(parts, dict) or "channels" not in parts:
                continue
            vectors.append(parts["masked" if masked else "plain"].float().mean(dim=0).flatten(start_dim=1))
            rows += [(run, epoch, layer, int(c)) for c in parts["channels"]]
    return UnitIndex(torch.cat(vectors), pd.DataFrame(rows, columns=["run", "epoch", "layer", "channel"]))


def centred_responses(units: torch.Tensor) -> torch.Tensor:
    """units (N, C), activations on N images -> (C, N) float32 rows whose cosine is the units'
    correlation (each centred over the images)."""
    units = units.float()
    return (units - units.mean(dim=0)).T


def response_index(similarity: str | Path, *, run: str = "") -> UnitIndex:
    """Every unit of every checkpoint of one run, by its centred activations on the similarity
    stage's held-out images (cosine = correlation); labels run, epoch, layer, channel."""
    vectors, rows = [], []
    for epoch, contents in _epoch_files(Path(similarity)).items():
        for layer, parts in contents["layers"].items():
            vectors.append(centred_responses(parts["units"]))
            rows += [(run, epoch, layer, c) for c in range(parts["units"].shape[1])]
    return UnitIndex(torch.cat(vectors), pd.DataFrame(rows, columns=["run", "epoch", "layer", "channel"]))
