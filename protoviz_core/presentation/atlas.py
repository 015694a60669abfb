"""The prototype atlas: a static viewer that opens from disk and stays light at full scale.

A full run holds ~200,000 prototypes, so the atlas never inlines them. It packs
JPEG thumbnails into sprite sheets in two layouts, one per way of looking, and the
viewer points a tile at a cell of one sheet, so the browser loads only the sheets
on screen:

- browsing a layer (every unit at one epoch): one sheet per shard of the store
  (epoch, layer, repeat), units in a square grid;
- scrubbing a unit through training: one strip per (layer, unit), a row per repeat
  and a column per epoch, so moving the slider reads one file instead of a layer's
  sheet per epoch.

Layout::

    <atlas>/index.html                      the viewer (protoviz_core/presentation/atlas_viewer.html)
    <atlas>/runs.js                         window.PROTOVIZ_ATLAS = {"runs": [manifest, ...]}
    <atlas>/runs/<run>/manifest.json        one run: epochs, layers, channels, activations
    <atlas>/runs/<run>/sprites/*.jpg        one sheet per shard, named by a hash of its content
    <atlas>/runs/<run>/strips/*.jpg         one strip per (layer, unit), named by a hash of its content
    <atlas>/runs/<run>/masks/*.png          each (epoch, layer)'s RF mask as a dimming overlay (grey outside)
    <atlas>/runs/<run>/exemplars/*.jpg      per (layer, unit): its top natural images, a row per epoch
    <atlas>/runs/<run>/exemplar_sheets/*.jpg  per (epoch, layer): every unit's best natural image,
                                            laid out like the layer's prototype sheet

Exemplars (:mod:`protoviz_core.measures.exemplars`) are the data set's images that drive a unit
hardest at that epoch; the manifest holds their activations and each prototype's
superstimulus ratio (its activation over the best exemplar's), the viewer's default curve.

``runs.js`` is a script, not JSON, because browsers refuse to fetch files from a
page opened as file://. Run parts from several runs (the comparison command
collects them from MLflow) are merged by :func:`write_viewer`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from protoviz_core.infra.atomic import atomic_write, save_image
from protoviz_core.infra.errors import MissingInputError
from protoviz_core.infra.hashing import short_hash
from protoviz_core.infra.work import prune
from protoviz_core.measures.exemplars import ExemplarSet
from protoviz_core.measures.masks import MaskSet
from protoviz_core.presentation.montage import grid, surround_gain, thumbnails
from protoviz_core.prototypes.store import PrototypeStore

VIEWER = Path(__file__).with_name("atlas_viewer.html")
MANIFEST = "manifest.json"
RUNS_SCRIPT = "runs.js"
STRIP_BLOCK = 32  # units whose strips are made from one read of the layer's shards: bounds memory
_THUMBNAIL_CHUNK = 2048  # images scaled at a time (as float32: ~230 MB at 96 px)


def write_run_part(
    store: PrototypeStore,
    masks: MaskSet,
    folder: str | Path,
    *,
    name: str,
    thumb_size: int,
    exemplars: ExemplarSet | None = None,
    readability: dict[int, dict] | None = None,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[int], None] = lambda epoch: None,
) -> dict:
    """Sprite sheets, masks and the manifest of one run's atlas in ``folder``.

    Resumable: a sheet's file name is a hash of its shard's key and the thumbnail
    size (a strip's, of its layer's shard keys), so a rerun after a kill (or after new
    epochs) writes only missing sheets, and sheets of another configuration are removed.

    Args:
        masks: the rfmask stage's masks.
        exemplars: the run's natural exemplars (every epoch of the store); None: an atlas without them.
        readability: ``{epoch: readability stage result}``
            (:func:`~protoviz_core.measures.readability.read_scores`); each unit's 2-AFC scores go
            into the manifest. None: an atlas without them.
        on_epoch: called after each epoch's sheets (progress).
        name: the run's folder and label, e.g. ``clrjit-seed1-1a2b3c4d``.

    Returns:
        The manifest (also written to ``folder/manifest.json``).
    """
    folder = Path(folder)
    index = store.index
    if index.empty:
        raise MissingInputError(
            f"{store.root}: the prototype store is empty; nothing to put in an atlas; rerun dvc repro extract"
        )
    epochs = sorted(int(e) for e in index.epoch.unique())
    repeats = sorted(int(r) for r in index["repeat"].unique())
    layers = list(dict.fromkeys(index.layer))  # extraction order = network order
    image_size = int(store.images(index.iloc[:1]).shape[-1])
    thumb = min(thumb_size, image_size)
    channels = {
        layer: sorted(int(c) for c in index[index.layer == layer].channel.unique()) for layer in layers
    }
    columns = {layer: max(1, math.ceil(math.sqrt(len(chosen)))) for layer, chosen in channels.items()}
    sheets = _write_sheets(store, folder, epochs, repeats, channels, columns, thumb, on_epoch)
    prune(folder / "sprites", [Path(p).name for p in sheets.sprites.values()], log, pattern="*.jpg")
    log(f"atlas {name}: one strip per unit across epochs (for scrubbing)")
    strips = _write_strips(store, folder, channels, sheets.shard_keys, epochs, repeats, thumb)
    prune(folder / "strips", [Path(p).name for p in strips.values()], log, pattern="*.jpg")
    mask_files = _write_masks(masks, folder, epochs, layers, thumb)
    rows0 = index.iloc[0]
    manifest = {
        "name": name,
        "aug": str(rows0["aug"]),
        "seed": int(rows0["seed"]),
        "thumb": thumb,
        "epochs": epochs,
        "repeats": repeats,
        "layers": layers,
        "channels": channels,
        "columns": columns,
        "sprites": sheets.sprites,
        "strips": strips,
        "masks": mask_files,
        "activations": sheets.activations,
        "superstimulus": sheets.ratios,
    }
    if readability is not None:
        manifest["readability"] = _readability_scores(readability, epochs, channels)
    if exemplars is not None:
        log(f"atlas {name}: each unit's top natural images per epoch")
        manifest["exemplars"] = _write_exemplars(exemplars, folder, channels, columns, epochs, thumb, log)
    with atomic_write(folder / MANIFEST) as f:
        json.dump(manifest, f)
    return manifest


@dataclass
class _Sheets:
    """The layer sheets of every (epoch, layer, repeat) and what the manifest says of their units."""

    sprites: dict[str, str]  # cell "eXXXX-<layer>-r<repeat>" -> sheet path relative to the run part
    shard_keys: dict[str, list[str]]  # per layer, every shard's key (the strips are named by them)
    activations: dict[str, list]  # per layer: [epoch index][repeat index][channel index]
    ratios: dict[str, list]  # the same, superstimulus ratio (None: no yardstick)


def _write_sheets(
    store: PrototypeStore,
    folder: Path,
    epochs: list[int],
    repeats: list[int],
    channels: dict[str, list[int]],
    columns: dict[str, int],
    thumb: int,
    on_epoch: Callable[[int], None],
) -> _Sheets:
    """One JPEG sheet per shard (unit i at cell (i // columns, i % columns)), named by a hash of the
    shard's key and the layout, so that a rerun writes only missing sheets."""
    sheets = _Sheets(
        sprites={},
        shard_keys={layer: [] for layer in channels},
        activations={layer: [] for layer in channels},
        ratios={layer: [] for layer in channels},
    )
    for epoch in epochs:
        for layer in channels:
            per_repeat, per_repeat_ratio = [], []
            for repeat in repeats:
                rows = store.select(epoch=epoch, layer=layer, repeat=repeat).sort_values("channel")
                if list(rows.channel) != channels[layer]:
                    raise MissingInputError(
                        f"{store.root}: epoch {epoch} {layer} repeat {repeat} lacks channels; "
                        "rerun the extract stage"
                    )
                shard_key = store.shard_keys(epoch=epoch, layer=layer, repeat=repeat)
                sheets.shard_keys[layer].append(str(shard_key))
                digest = short_hash(f"{shard_key}:{thumb}:{columns[layer]}")
                cell = f"e{epoch:04d}-{layer}-r{repeat}"
                sheets.sprites[cell] = f"sprites/{cell}-{digest}.jpg"
                path = folder / sheets.sprites[cell]
                if not path.is_file():
                    # Cell i of a sheet at (i // columns, i % columns), no gaps: the viewer's arithmetic.
                    sheet = grid(thumbnails(store.images(rows), thumb), columns[layer], gap=0)
                    save_image(sheet, path, quality=90)
                per_repeat.append([round(float(a), 4) for a in rows.activation])
                per_repeat_ratio.append(
                    [None if math.isnan(r) else round(float(r), 4) for r in rows.superstimulus]
                )
            sheets.activations[layer].append(per_repeat)
            sheets.ratios[layer].append(per_repeat_ratio)
        on_epoch(epoch)
    return sheets


def _write_masks(masks: MaskSet, folder: Path, epochs: list[int], layers: list[str], thumb: int) -> dict:
    """Each (epoch, layer)'s RF mask as a small PNG the viewer multiplies over a tile (grey outside)."""
    files = {}
    for epoch in epochs:
        for layer, mask in masks.for_epoch(epoch, layers).items():
            small = thumbnails(
                (surround_gain(mask) * 255).round().to(torch.uint8).expand(3, -1, -1)[None], thumb
            )[0]
            cell = f"e{epoch:04d}-{layer}"
            files[cell] = f"masks/{cell}.png"
            save_image(Image.fromarray(small.permute(1, 2, 0).numpy()), folder / files[cell])
    return files


def _readability_scores(
    readability: dict[int, dict], epochs: list[int], channels: dict[str, list[int]]
) -> dict:
    """Per layer, [epoch index][channel index] -> [prototypes, exemplars] (None: no scores that epoch)."""
    return {
        layer: [_unit_scores(readability.get(epoch, {}).get(layer), chosen) for epoch in epochs]
        for layer, chosen in channels.items()
    }


def _unit_scores(scores: dict | None, channels: list[int]) -> list | None:
    """[[prototypes, exemplars] per channel] from one epoch's and layer's readability scores."""
    if scores is None:
        return None
    where = {int(c): i for i, c in enumerate(scores["channels"].tolist())}
    return [
        [round(float(scores[kind][where[c]]), 3) for kind in ("prototypes", "exemplars")]
        if c in where
        else None
        for c in channels
    ]


def strip_name(layer: str, channel: int) -> str:
    """The manifest's key of a unit's strip, e.g. ``layer4-c17``."""
    return f"{layer}-c{channel}"


def _write_strips(
    store: PrototypeStore,
    folder: Path,
    channels: dict[str, list[int]],
    shard_keys: dict[str, list[str]],
    epochs: list[int],
    repeats: list[int],
    thumb: int,
) -> dict[str, str]:
    """One JPEG strip per (layer, unit): row r = repeat r, column e = epoch e, in manifest order.

    A layer's units are read ``STRIP_BLOCK`` at a time across all its shards, so memory
    holds that block's images at every epoch and repeat (about 0.2 GB per copy for a
    101-epoch run at 96 px), whatever the layer's width.

    Args:
        shard_keys: per layer, the keys of all its shards (every epoch and repeat): a strip
            is named by them, so it is remade when any of them changes.

    Returns:
        {``strip_name(layer, channel)``: path relative to ``folder``}.
    """
    strips: dict[str, str] = {}
    for layer, chosen in channels.items():
        layer_key = "|".join(shard_keys[layer])
        todo = []
        for channel in chosen:
            digest = short_hash(f"{layer_key}:{thumb}:{channel}:{epochs}:{repeats}")
            strips[strip_name(layer, channel)] = f"strips/{layer}-c{channel:04d}-{digest}.jpg"
            if not (folder / strips[strip_name(layer, channel)]).is_file():
                todo.append(channel)
        for start in range(0, len(todo), STRIP_BLOCK):
            block = todo[start : start + STRIP_BLOCK]
            rows = store.select(layer=layer, channel=block).sort_values(["channel", "repeat", "epoch"])
            if len(rows) != len(block) * len(repeats) * len(epochs):
                raise MissingInputError(
                    f"{store.root}: {layer} lacks epochs or repeats of units {block}; rerun the extract stage"
                )
            full = store.images(rows)  # uint8 (block * repeats * epochs, 3, S, S)
            small = torch.cat(
                [
                    thumbnails(full[i : i + _THUMBNAIL_CHUNK], thumb)
                    for i in range(0, len(full), _THUMBNAIL_CHUNK)
                ]
            )
            per_unit = len(repeats) * len(epochs)
            for i, channel in enumerate(block):
                strip = grid(small[i * per_unit : (i + 1) * per_unit], len(epochs), gap=0)
                save_image(strip, folder / strips[strip_name(layer, channel)], quality=90)
    return strips


def _write_exemplars(
    exemplars: ExemplarSet,
    folder: Path,
    channels: dict[str, list[int]],
    columns: dict[str, int],
    epochs: list[int],
    thumb: int,
    log: Callable[[str], None],
) -> dict:
    """Exemplar strips (per unit: a row per epoch, its top k images) and sheets (per epoch and layer:
    every unit's best image, cell i where the prototype sheet has unit i); their manifest entry.

    Files are named by a hash of the exemplar files' keys, so a rerun writes only what changed.
    """
    missing = sorted(set(epochs) - set(exemplars.by_epoch))
    if missing:
        raise MissingInputError(f"no exemplars for epochs {missing}; rerun dvc repro exemplars")
    keys = "|".join(str(exemplars.by_epoch[epoch]["key"]) for epoch in epochs)
    strips: dict[str, str] = {}
    sheets: dict[str, str] = {}
    found: dict[str, list] = {
        layer: [] for layer in channels
    }  # [epoch index][channel index] -> k activations
    for layer, chosen in channels.items():
        tops = [
            exemplars.top(epoch, layer, chosen) for epoch in epochs
        ]  # per epoch: (C, k) values, positions
        for values, _ in tops:
            found[layer].append([[round(float(v), 4) for v in row] for row in values])
        for epoch, (_, positions) in zip(epochs, tops):
            digest = short_hash(
                f"{exemplars.by_epoch[epoch]['key']}:{layer}:{thumb}:{columns[layer]}:{chosen}"
            )
            cell = f"e{epoch:04d}-{layer}"
            sheets[cell] = f"exemplar_sheets/{cell}-{digest}.jpg"
            if not (folder / sheets[cell]).is_file():
                best = torch.from_numpy(exemplars.pool.images(positions[:, 0].numpy()))
                save_image(
                    grid(thumbnails(best, thumb), columns[layer], gap=0), folder / sheets[cell], quality=90
                )
        by_unit = torch.stack([positions for _, positions in tops], dim=1)  # (C, E, k)
        for i, channel in enumerate(chosen):
            digest = short_hash(f"{keys}:{layer}:{channel}:{thumb}")
            strips[strip_name(layer, channel)] = f"exemplars/{layer}-c{channel:04d}-{digest}.jpg"
            path = folder / strips[strip_name(layer, channel)]
            if not path.is_file():
                images = torch.from_numpy(exemplars.pool.images(by_unit[i].flatten().numpy()))
                save_image(grid(thumbnails(images, thumb), by_unit.shape[2], gap=0), path, quality=90)
    prune(folder / "exemplars", [Path(p).name for p in strips.values()], log, pattern="*.jpg")
    prune(folder / "exemplar_sheets", [Path(p).name for p in sheets.values()], log, pattern="*.jpg")
    return {
        "k": exemplars.top_k,
        "sample": exemplars.sample_size,
        "strips": strips,
        "sheets": sheets,
        "activations": found,
    }


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a run part written by :func:`write_run_part`."""
    return json.loads((Path(folder) / MANIFEST).read_text())


def write_viewer(atlas: str | Path, manifests: list[dict]) -> Path:
    """The viewer page and ``runs.js`` over run parts already in ``atlas/runs/<name>/``.

    Returns:
        The path of ``index.html``.
    """
    atlas = Path(atlas)
    if not manifests:
        raise ValueError("an atlas needs at least one run")
    missing = [m["name"] for m in manifests if not (atlas / "runs" / m["name"] / MANIFEST).is_file()]
    if missing:
        raise FileNotFoundError(f"{atlas}/runs: no run part for {missing}")
    ordered = sorted(manifests, key=lambda m: (m["seed"], m["aug"], m["name"]))
    with atomic_write(atlas / RUNS_SCRIPT) as f:
        f.write("window.PROTOVIZ_ATLAS = " + json.dumps({"runs": ordered}) + ";\n")
    with atomic_write(atlas / "index.html") as f:
        f.write(VIEWER.read_text())
    return atlas / "index.html"
