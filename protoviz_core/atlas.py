"""The prototype atlas: a static viewer that opens from disk and stays light at full scale.

A full run holds ~200,000 prototypes, so the atlas never inlines them. Each shard
of the store (one epoch, layer and repeat) becomes one JPEG sprite sheet of
thumbnails; the viewer shows a unit by pointing a tile at its cell of one sheet, so
the browser loads only the sheets on screen. Layout::

    <atlas>/index.html                      the viewer (protoviz_core/atlas_viewer.html)
    <atlas>/runs.js                         window.PROTOVIZ_ATLAS = {"runs": [manifest, ...]}
    <atlas>/runs/<run>/manifest.json        one run: epochs, layers, channels, activations
    <atlas>/runs/<run>/sprites/*.jpg        one sheet per shard, named by a hash of its content
    <atlas>/runs/<run>/masks/*.png          the RF mask of each (epoch, layer), white = inside

``runs.js`` is a script, not JSON, because browsers refuse to fetch files from a
page opened as file://. Run parts from several runs (the comparison command
collects them from MLflow) are merged by :func:`write_viewer`.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from protoviz_core.atomic import atomic_write, save_image
from protoviz_core.errors import MissingInputError
from protoviz_core.masks import MaskSet
from protoviz_core.montage import grid, thumbnails
from protoviz_core.store import PrototypeStore
from protoviz_core.work import prune

VIEWER = Path(__file__).with_name("atlas_viewer.html")
MANIFEST = "manifest.json"
RUNS_SCRIPT = "runs.js"


def write_run_part(
    store: PrototypeStore,
    masks: MaskSet,
    folder: str | Path,
    *,
    name: str,
    thumb_size: int,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[int], None] = lambda epoch: None,
) -> dict:
    """Sprite sheets, masks and the manifest of one run's atlas in ``folder``.

    Resumable: a sheet's file name is a hash of its shard's key and the thumbnail
    size, so a rerun after a kill (or after new epochs) writes only missing sheets,
    and sheets of another configuration are removed.

    Args:
        masks: the rfmask stage's masks.
        on_epoch: called after each epoch's sheets (progress).
        name: the run's folder and label, e.g. ``clrjit-seed1-1a2b3c4d``.

    Returns:
        The manifest (also written to ``folder/manifest.json``).
    """
    folder = Path(folder)
    index = store.index
    if index.empty:
        raise MissingInputError(f"{store.root}: the prototype store is empty; nothing to put in an atlas; "
                                "rerun dvc repro extract")
    epochs = sorted(int(e) for e in index.epoch.unique())
    repeats = sorted(int(r) for r in index["repeat"].unique())
    layers = list(dict.fromkeys(index.layer))  # extraction order = network order
    image_size = int(store.images(index.iloc[:1]).shape[-1])
    thumb = min(thumb_size, image_size)

    channels = {layer: sorted(int(c) for c in index[index.layer == layer].channel.unique()) for layer in layers}
    columns = {layer: max(1, math.ceil(math.sqrt(len(chosen)))) for layer, chosen in channels.items()}
    sprites: dict[str, str] = {}
    activations = {layer: [] for layer in layers}  # [epoch index][repeat index][channel index]
    for epoch in epochs:
        for layer in layers:
            per_repeat = []
            for repeat in repeats:
                rows = store.select(epoch=epoch, layer=layer, repeat=repeat).sort_values("channel")
                if list(rows.channel) != channels[layer]:
                    raise MissingInputError(f"{store.root}: epoch {epoch} {layer} repeat {repeat} lacks channels; "
                                     "rerun the extract stage")
                key = f"{store.shard_keys(epoch=epoch, layer=layer, repeat=repeat)}:{thumb}:{columns[layer]}"
                digest = hashlib.sha256(key.encode()).hexdigest()[:12]
                cell = f"e{epoch:04d}-{layer}-r{repeat}"
                sprites[cell] = f"sprites/{cell}-{digest}.jpg"
                path = folder / sprites[cell]
                if not path.is_file():
                    # Cell i of a sheet at (i // columns, i % columns), no gaps: the viewer's arithmetic.
                    sheet = grid(thumbnails(store.images(rows), thumb), columns[layer], gap=0)
                    save_image(sheet, path, quality=90)
                per_repeat.append([round(float(a), 4) for a in rows.activation])
            activations[layer].append(per_repeat)
        on_epoch(epoch)
    prune(folder / "sprites", [Path(p).name for p in sprites.values()], log, pattern="*.jpg")

    mask_files: dict[str, str] = {}
    for epoch in epochs:
        for layer, mask in masks.for_epoch(epoch, layers).items():
            small = thumbnails((mask * 255).round().to(torch.uint8).expand(3, -1, -1)[None], thumb)[0]
            cell = f"e{epoch:04d}-{layer}"
            mask_files[cell] = f"masks/{cell}.png"
            save_image(Image.fromarray(small.permute(1, 2, 0).numpy()), folder / mask_files[cell])

    rows0 = index.iloc[0]
    manifest = {
        "name": name, "aug": str(rows0["aug"]), "seed": int(rows0["seed"]), "thumb": thumb,
        "epochs": epochs, "repeats": repeats, "layers": layers, "channels": channels, "columns": columns,
        "sprites": sprites, "masks": mask_files, "activations": activations,
    }
    with atomic_write(folder / MANIFEST) as f:
        json.dump(manifest, f)
    return manifest


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
