"""The prototype store: a million images in packed shards plus one Parquet index.

DVC slows to hours on output folders of ~1M loose files (treeverse/dvc 7681, 7607,
10491), so prototypes are packed: one shard file per (epoch, layer, repeat) holds
all channels of that layer::

    <store>/shards/e0007-layer3-r1.pt   torch zip file, loadable with weights_only=True
        key          identity of what produced it (configuration + checkpoint)
        images       uint8 (C, 3, S, S)          (extract.shard_format: raw), or
        png          uint8 (B,)  the C images as lossless PNG files, end to end  (png)
        png_offsets  int64 (C + 1,)  image i is png[png_offsets[i]:png_offsets[i + 1]]
        activations  float32 (C,)  centre activation of each channel on its image
        latents      float16 (C, d)
        dead         bool (C,)
        channels     int64 (C,)
        redrawn      bool (C,)
    <store>/index.parquet   one row per prototype:
        aug, seed, repeat, epoch, layer, channel, activation, dead, shard, offset, shard_key,
        natural_best    the highest activation any sampled image of the data set gives the unit
                        (protoviz_core.measures.exemplars; NaN when the store was built without exemplars)
        superstimulus   activation / natural_best: above 1, the prototype beats the data

Shards are written to a temporary name and renamed when complete, so a killed run
leaves only whole shards; :func:`open_prototypes` reads them lazily (memory-mapped,
only the shards a selection needs). A shard is only trusted as far as the index
vouches for it: every read checks the shard's key and the channels at the rows'
offsets against the index, so a shard rewritten by a later, unfinished extract
(another configuration) is refused instead of mislabelled.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from PIL import Image

from protoviz_core.infra.atomic import atomic_write, load_or_none, save_atomic
from protoviz_core.infra.errors import MissingInputError
from protoviz_core.infra.work import KEY
from protoviz_core.prototypes.superstimulus import superstimulus_ratio

if TYPE_CHECKING:
    from protoviz_core.engine.synthesis import Prototypes

INDEX_NAME = "index.parquet"
SHARDS_DIR = "shards"
INDEX_COLUMNS = [
    "aug",
    "seed",
    "repeat",
    "epoch",
    "layer",
    "channel",
    "activation",
    "dead",
    "shard",
    "offset",
    "shard_key",
    "natural_best",
    "superstimulus",
]
# natural_best(epoch, layer, channels (N,)) -> (N,): each unit's best natural activation (the exemplars')
NaturalBest = Callable[[int, str, np.ndarray], np.ndarray]
IMAGE_FORMATS = ("raw", "png")  # how a shard holds its images; the same pixels either way
# dvc repro alone does nothing where DVC believes the output current (bytes pulled from a remote
# without verify); forced, the extract stage redoes only shards that are missing or not its own.
_RERUN = (
    "run dvc repro --force --single-item extract (it redoes only the shards that are missing or "
    "not what they should be; dvc checkout restores a committed store)"
)


class StoreError(MissingInputError):
    """The prototype store is missing, damaged or inconsistent; names the file and the fix."""


@dataclass(frozen=True)
class ShardId:
    """Which prototypes a shard holds: all chosen channels of one layer, epoch and repeat."""

    epoch: int
    layer: str
    repeat: int

    @property
    def name(self) -> str:
        return f"e{self.epoch:04d}-{self.layer}-r{self.repeat}.pt"


def shards_dir(store: str | Path) -> Path:
    """The folder of a store's shard files."""
    return Path(store) / SHARDS_DIR


def shard_path(store: str | Path, shard: ShardId) -> Path:
    return shards_dir(store) / shard.name


def pack_shard(prototypes: Prototypes, image_format: str = "raw") -> dict:
    """A :class:`~protoviz_core.engine.synthesis.Prototypes` as a shard's contents
    (everything but its key)."""
    images = (prototypes.images * 255).round().clamp(0, 255).to(torch.uint8)
    return {
        **encode_images(images, image_format),
        "activations": prototypes.activations.float(),
        "latents": prototypes.latents.half(),
        "dead": prototypes.dead.bool(),
        "channels": prototypes.channels.long(),
        "redrawn": prototypes.redrawn.bool(),
    }


def encode_images(images: torch.Tensor, image_format: str) -> dict[str, torch.Tensor]:
    """A shard's image fields for uint8 (C, 3, S, S) ``images`` in ``image_format``.

    ``png`` compresses each image on its own (lossless), so reading a few channels
    decodes only those; how much it saves depends on the images: little for noisy
    prototypes, more for smooth ones (bench/choices/png_shards.py).
    """
    if image_format == "raw":
        return {"images": images}
    if image_format != "png":
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    encoded = []
    for image in images.permute(0, 2, 3, 1).numpy():  # (S, S, 3) each
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])])
    return {
        "png": torch.from_numpy(np.concatenate(encoded) if encoded else np.zeros(0, np.uint8)),
        "png_offsets": torch.from_numpy(offsets.astype(np.int64)),
    }


def image_format_of(contents: dict) -> str:
    """``raw`` or ``png``: how the shard ``contents`` hold their images."""
    return "png" if "png" in contents else "raw"


def decode_images(contents: dict, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (n, 3, S, S): the shard's images at ``offsets`` (all when None), whatever its format."""
    if image_format_of(contents) == "raw":
        return contents["images"] if offsets is None else contents["images"][offsets]
    bounds = contents["png_offsets"]
    chosen = range(len(bounds) - 1) if offsets is None else offsets.tolist()
    data = contents["png"].numpy()
    images = [
        np.asarray(Image.open(io.BytesIO(data[bounds[i] : bounds[i + 1]].tobytes())).convert("RGB"))
        for i in chosen
    ]
    if not images:
        return torch.empty(0, 3, 0, 0, dtype=torch.uint8)
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def write_shard(
    store: str | Path, shard: ShardId, key: str, prototypes: Prototypes, image_format: str = "raw"
) -> Path:
    """Write a shard outside the extract stage (tests, benchmarks), atomically, in its format."""
    path = shard_path(store, shard)
    save_atomic({KEY: key, **pack_shard(prototypes, image_format)}, path)
    return path


def read_shard(path: str | Path, *, mmap: bool = True) -> dict | None:
    """A shard's contents, or None when it is missing, truncated or not a shard."""
    shard = load_or_none(path, mmap=mmap)
    needed = {"key", "activations", "latents", "dead", "channels"}
    if not (isinstance(shard, dict) and needed <= shard.keys()):
        return None
    return shard if "images" in shard or {"png", "png_offsets"} <= shard.keys() else None


def convert_shards(
    store: str | Path, shards: Iterable[ShardId], image_format: str, log: Callable[[str], None] = print
) -> int:
    """Re-encode the shards not in ``image_format`` (atomically; same pixels, same key).

    The format is a storage choice, not part of a shard's identity, so changing
    ``extract.shard_format`` converts the finished shards instead of synthesising them again.

    Returns:
        How many shards were converted.
    """
    converted = 0
    for shard in shards:
        path = shard_path(store, shard)
        contents = read_shard(path)
        if contents is None:
            raise StoreError(f"{path}: missing or unreadable shard; {_RERUN}")
        if image_format_of(contents) == image_format:
            continue
        fields = {k: v for k, v in contents.items() if k not in ("images", "png", "png_offsets")}
        save_atomic({**fields, **encode_images(decode_images(contents), image_format)}, path)
        converted += 1
    if converted:
        log(f"{store}: re-encoded {converted} shards as {image_format}")
    return converted


def build_index(
    store: str | Path,
    shards: Iterable[ShardId],
    *,
    aug: str,
    seed: int,
    natural_best: NaturalBest | None = None,
) -> pd.DataFrame:
    """Index rows of ``shards`` (read lazily) and write ``index.parquet`` atomically.

    ``natural_best`` gives each prototype's yardstick for the ``superstimulus`` column
    (the extract stage reads it from the exemplars); without it both columns are NaN.
    """
    frames = []
    for shard in shards:
        contents = read_shard(shard_path(store, shard))
        if contents is None:
            raise StoreError(f"{shard_path(store, shard)}: missing or unreadable shard; {_RERUN}")
        count = len(contents["channels"])
        channels = contents["channels"].numpy()
        best = (
            np.full(count, np.nan)
            if natural_best is None
            else np.asarray(natural_best(shard.epoch, shard.layer, channels), dtype=np.float64)
        )
        frames.append(
            pd.DataFrame(
                {
                    "aug": aug,
                    "seed": seed,
                    "repeat": shard.repeat,
                    "epoch": shard.epoch,
                    "layer": shard.layer,
                    "channel": contents["channels"].numpy(),
                    "activation": contents["activations"].numpy(),
                    "dead": contents["dead"].numpy(),
                    "shard": shard.name,
                    "offset": range(count),
                    "shard_key": contents[KEY],
                    "natural_best": best,
                    "superstimulus": superstimulus_ratio(contents["activations"].numpy(), best),
                }
            )
        )
    index = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=INDEX_COLUMNS)
    with atomic_write(Path(store) / INDEX_NAME, "wb") as f:
        index.to_parquet(f, index=False)
    return index


class PrototypeStore:
    """A finished store, opened for reading. Select rows by key, then load their images.

    ``store.select(epoch=5, layer="layer3")`` -> index rows (a DataFrame);
    ``store.images(rows)`` -> uint8 (N, 3, S, S) in the rows' order, reading only the
    shards those rows live in (memory-mapped).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / INDEX_NAME
        if not path.is_file():
            raise StoreError(f"{path}: no prototype index; {_RERUN}")
        try:
            self.index = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for truncated or foreign files
            raise StoreError(f"{path}: unreadable prototype index ({type(exc).__name__}); {_RERUN}") from None
        missing = sorted(set(INDEX_COLUMNS) - set(self.index.columns))
        if missing:
            raise StoreError(
                f"{path}: not a prototype index of this protoviz (no columns {missing}); {_RERUN}"
            )

    def select(self, **keys) -> pd.DataFrame:
        """Rows whose columns equal the given values; a list or tuple value means any of them."""
        unknown = set(keys) - set(INDEX_COLUMNS)
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; select by any of {INDEX_COLUMNS}")
        chosen = pd.Series(True, index=self.index.index)
        for column, value in keys.items():
            values = list(value) if isinstance(value, (list, tuple, set)) else [value]
            chosen &= self.index[column].isin(values)
        return self.index[chosen]

    def _shard(self, name: str, rows: pd.DataFrame) -> dict:
        """The shard ``name``, checked against the index ``rows`` that point into it.

        Raises:
            StoreError: the shard is missing or truncated, was made by another
                configuration than the index says, or holds other channels at the rows' offsets.
        """
        path = self.root / SHARDS_DIR / name
        contents = read_shard(path)
        if contents is None:
            raise StoreError(f"{path}: missing or truncated shard; {_RERUN}")
        if set(rows["shard_key"]) != {contents[KEY]}:
            raise StoreError(
                f"{path}: made by another configuration than {self.root / INDEX_NAME} says "
                f"(an unfinished extract?); {_RERUN}"
            )
        offsets = torch.tensor(rows["offset"].tolist())
        if offsets.numel() and (
            int(offsets.max()) >= len(contents["channels"])
            or contents["channels"][offsets].tolist() != rows["channel"].tolist()
        ):
            raise StoreError(f"{path}: holds other channels than {self.root / INDEX_NAME} says; {_RERUN}")
        return contents

    def _gather(self, rows: pd.DataFrame, field: str) -> torch.Tensor:
        parts, order = [], []
        for shard_name, group in rows.groupby("shard", sort=False):
            contents = self._shard(shard_name, group)
            offsets = torch.tensor(group["offset"].tolist())
            parts.append(decode_images(contents, offsets) if field == "images" else contents[field][offsets])
            order.extend(group.index)
        if not parts:
            return torch.empty(0)
        gathered = torch.cat(parts)
        position = {row: i for i, row in enumerate(order)}
        return gathered[torch.as_tensor([position[row] for row in rows.index])]

    def shard_keys(self, **keys) -> list[str]:
        """The configuration keys of the shards holding the selected rows (a content fingerprint)."""
        rows = self.select(**keys)
        return [self._shard(name, group)[KEY] for name, group in rows.groupby("shard")]  # by shard name

    def images(self, rows: pd.DataFrame) -> torch.Tensor:
        """uint8 (N, 3, S, S) images of ``rows``, in their order."""
        return self._gather(rows, "images")

    def latents(self, rows: pd.DataFrame) -> torch.Tensor:
        """float16 (N, d) generator codes of ``rows``, in their order."""
        return self._gather(rows, "latents")


def open_prototypes(root: str | Path) -> PrototypeStore:
    """Open the prototype store at ``root`` (the extract stage's output folder).

    Examples:
        A store of one shard, written as the extract stage writes it, then read back:

        >>> import tempfile, torch
        >>> from protoviz_core.engine.synthesis import Prototypes
        >>> from protoviz_core.prototypes.store import ShardId, build_index, write_shard
        >>> root = tempfile.mkdtemp()
        >>> no = torch.zeros(4, dtype=torch.bool)
        >>> made = Prototypes(
        ...     images=torch.rand(4, 3, 8, 8), activations=torch.ones(4), latents=torch.zeros(4, 2),
        ...     channels=torch.arange(4), dead=no, redrawn=no, evolution_activations=torch.ones(4),
        ... )
        >>> shard = ShardId(epoch=5, layer="layer3", repeat=1)
        >>> _ = write_shard(root, shard, "example", made)
        >>> _ = build_index(root, [shard], aug="clrjit", seed=1)
        >>> store = open_prototypes(root)
        >>> rows = store.select(epoch=5, layer="layer3", repeat=1)
        >>> rows.channel.tolist(), store.images(rows).shape, store.images(rows).dtype
        ([0, 1, 2, 3], torch.Size([4, 3, 8, 8]), torch.uint8)
        >>> import shutil; shutil.rmtree(root)
    """
    return PrototypeStore(root)
