"""Short identities: SHA-256 digests cut to one length, for keys and file names."""

from __future__ import annotations

import hashlib
from pathlib import Path

HEX_DIGITS = 24  # 96 bits: no two of the results a study makes share a key by chance


def short_hash(*chunks: str | bytes) -> str:
    """The SHA-256 of the concatenated ``chunks`` (text as UTF-8), as :data:`HEX_DIGITS` hex digits."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk.encode() if isinstance(chunk, str) else chunk)
    return digest.hexdigest()[:HEX_DIGITS]


def file_hash(path: str | Path) -> str:
    """:func:`short_hash` of a file's bytes, read in blocks (weights files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:HEX_DIGITS]
