"""Guards against silent garbage: a result that carries no information stops the stage.

A stage that is about to write vectors, masks or images checks them first. NaN or
infinite values, all zeros, or (for a set of vectors) the same vector for every
item mean something upstream went wrong — a network that outputs nothing, a
precision that underflowed, a fit that collapsed — and every number computed from
them would be meaningless. One :class:`DegenerateError` names what and where.
"""

from __future__ import annotations

import torch

from protoviz_core.infra.errors import ProtovizError


class DegenerateError(ProtovizError, ValueError):
    """A result is NaN/inf, all zero or constant; the message names it and where it came from."""


def require_informative(values: torch.Tensor, what: str, *, items_must_differ: bool = True) -> None:
    """Raise :class:`DegenerateError` unless ``values`` carry information.

    Args:
        values: (N, ...) a set of N items (e.g. N embeddings (N, D)), or one item
            (e.g. an (H, W) mask) with ``items_must_differ=False``.
        what: names the result and where it comes from, e.g.
            ``"mobilenet_v2 embeddings of epoch 3, layer2, repeat 1 (masked)"``.
        items_must_differ: also refuse N >= 2 items that are all identical.

    Raises:
        DegenerateError: non-finite values, all zeros, or identical items.
    """
    if values.numel() == 0:
        raise DegenerateError(f"{what}: empty")
    finite = torch.isfinite(values)
    if not finite.all():
        bad = int((~finite).sum())
        raise DegenerateError(f"{what}: {bad} of {values.numel()} values are NaN or infinite")
    if not values.any():
        raise DegenerateError(f"{what}: all values are zero")
    if items_must_differ and len(values) >= 2 and bool((values == values[:1]).all()):
        raise DegenerateError(
            f"{what}: all {len(values)} items are identical, so every distance between them is 0"
        )
