"""Counter-based random numbers: each stream depends only on its own key.

The batched optimiser runs many independent searches (one per channel) in one
tensor. If they drew from one shared generator, a channel's random numbers would
depend on which other channels share its batch, and optimising one channel alone
would not reproduce the batched result. Here the value at position ``i`` of stream
``key`` at step ``step`` is a hash of ``(key, step, i)`` (the idea of Philox and
JAX's PRNG keys, with a simple integer hash), so streams are independent of batch
composition, chunking and device, and need no Python loop over channels.

All arithmetic stays below 2**63 in int64, so it is exact on every device.
"""

from __future__ import annotations

import hashlib
import math
import numbers

import torch

_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """(x * constant) mod 2**32 for int64 x in [0, 2**32), without overflowing int64."""
    high, low = constant >> 16, constant & 0xFFFF
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (``lowbias32``, C. Wellons): good avalanche, cheap."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _uniform_pair(keys: torch.Tensor, step: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent uniform tensors in (0, 1), each (K, count), float64."""
    base = _hash32(keys[:, None] * 0x9E3779B1)  # (K, 1): decorrelate neighbouring keys
    base = _hash32(base ^ _hash32(torch.full_like(base, step) * 0x85EBCA6B + 0x632BE5AB))
    index = torch.arange(count, device=keys.device, dtype=torch.int64)[None, :]  # (1, count)
    first = _hash32(base + index * 0x9E3779B1)  # (K, count)
    second = _hash32(first ^ 0x5BD1E995)
    return (first.double() + 0.5) / 2.0**32, (second.double() + 0.5) / 2.0**32


def keyed_normal(
    keys: torch.Tensor, step: int, shape: tuple[int, ...], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard normal samples, one independent stream per key.

    Args:
        keys: int64 (K,) stream keys in [0, 2**31), e.g. from :func:`stream_keys`.
        step: which draw of the stream (a generation counter), >= 0.
        shape: per-key sample shape.

    Returns:
        (K, *shape) normal samples. Row k depends only on (keys[k], step).
        Box-Muller: each pair of hashed uniforms gives two normals (cos and sin).
    """
    count = math.prod(shape)
    half = (count + 1) // 2
    u1, u2 = _uniform_pair(keys.to(torch.int64), step, half)
    radius = u1.log_().mul_(-2.0).sqrt_()  # in place: these are the hot loop's largest temporaries
    angle = u2.mul_(2.0 * math.pi)
    normal = torch.empty(len(keys), 2 * half, dtype=dtype, device=keys.device)
    torch.mul(radius, torch.cos(angle), out=normal[:, :half])
    torch.mul(radius, angle.sin_(), out=normal[:, half:])
    return normal[:, :count].reshape(len(keys), *shape)


def keyed_uniform(keys: torch.Tensor, step: int, count: int) -> torch.Tensor:
    """Uniform samples in (0, 1), float32 (K, count), one stream per key (as :func:`keyed_normal`)."""
    return _uniform_pair(keys.to(torch.int64), step, count)[0].float()


def stream_keys(seed: int, ids: torch.Tensor) -> torch.Tensor:
    """Keys for ``ids`` (e.g. channel indices) under ``seed``: int64 (K,) in [0, 2**31)."""
    return (seed * 1_000_003 + ids.to(torch.int64) * 7919) % (2**31 - 1)


def derive_seed(*parts: int | str) -> int:
    """A seed in [0, 2**31) that is a stable hash of ``parts`` (ints and strings).

    Seeds derived from different parts are unrelated (not neighbours that could
    share streams), e.g. ``derive_seed(run_seed, epoch, "layer3", repeat)`` for a
    shard, then ``derive_seed(shard_seed, "start")`` for one use inside it.
    """
    # Any integer (numpy's, pandas') counts as int, so an epoch read from a table keeps its stream.
    normal = [int(part) if isinstance(part, numbers.Integral) else part for part in parts]
    text = "\x1f".join(f"{type(part).__name__}:{part}" for part in normal)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF
