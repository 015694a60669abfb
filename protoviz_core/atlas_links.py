"""Links between the atlas's runs: which unit of one run is which unit of another.

Channel numbers are arbitrary, so "unit 17" of two runs are unrelated units (except at
epoch 0 of two runs of one seed, which share their initial weights). For each run part
of a comparison's atlas, and each of its layers, one script file holds:

- **matches**: for each extracted unit at each epoch, its partner in every other run at
  the same epoch by the correlation of their activations on the similarity stage's
  held-out images (:func:`protoviz_core.similarity.match_units`): the best of all the
  other run's units, the best of those with prototypes (the one the atlas can show), and
  the Hungarian one-to-one partner (Li et al. 2016);
- **nearest**: for each extracted unit at the run's last epoch, the ``k`` units of any
  run, epoch and layer that respond most alike (:class:`protoviz_core.neighbours.UnitIndex`
  over the extracted units measured on the same images, cosine of centred activations =
  correlation).

Layout, beside :mod:`protoviz_core.atlas`'s::

    <atlas>/runs/<run>/links/<layer>.js     window.PROTOVIZ_LINKS["<run>|<layer>"] = {...}

One file per (run, layer), loaded by the viewer only when a unit of that layer is shown:
at the paper's scale (6 runs, 101 epochs, 960 units) a run's links are tens of MB, which
the viewer's ``runs.js`` must not carry. Scripts, not JSON: a page opened from disk may not
fetch files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from protoviz_core.atomic import atomic_write
from protoviz_core.neighbours import UnitIndex
from protoviz_core.similarity import match_units
from protoviz_core.work import Contents

NEAREST_K = 6  # units listed as responding alike


def _same_images(first: Contents, second: Contents) -> bool:
    return first["sample"] == second["sample"] and torch.equal(first["positions"], second["positions"])


def _sample_key(contents: Contents) -> tuple:
    """Which images a similarity file measured: its sample and their positions."""
    return contents["sample"], tuple(contents["positions"].tolist())


def _response_indices(
    files: dict[str, dict[int, Contents]], manifests: dict[str, dict]
) -> dict[tuple, UnitIndex]:
    """Every extracted unit of every run, epoch and layer, by its centred activations, one index
    per image sample (correlations exist only between activations on the same images)."""
    parts: dict[tuple, tuple[list, list]] = {}
    for run_id, manifest in manifests.items():
        for epoch, contents in files.get(run_id, {}).items():
            vectors, rows = parts.setdefault(_sample_key(contents), ([], []))
            for layer, channels in manifest["channels"].items():
                if layer not in contents["layers"]:
                    continue
                units = contents["layers"][layer]["units"][:, channels].float()
                vectors.append((units - units.mean(dim=0)).T)
                rows += [(manifest["name"], epoch, layer, c) for c in channels]
    return {
        key: UnitIndex(torch.cat(vectors), pd.DataFrame(rows, columns=["run", "epoch", "layer", "channel"]))
        for key, (vectors, rows) in parts.items()
        if vectors
    }


def unit_links(
    files: dict[str, dict[int, Contents]], manifests: dict[str, dict], k: int = NEAREST_K
) -> dict[str, dict[str, dict]]:
    """Matches and nearest units of every run part (the module's docstring).

    Args:
        files: ``{run_id: {epoch: contents}}``, the similarity stage's files of the runs
            (:func:`protoviz_core.comparison.similarity_files`).
        manifests: ``{run_id: manifest}`` of the atlas's run parts
            (:func:`protoviz_core.atlas.write_run_part`); runs without files get no links.

    Returns:
        ``{run name: {layer: links}}``; ``links["matches"][other run][kind]`` holds, per epoch
        of the run part, ``[channel, correlation]`` per extracted channel (None where the other
        run lacks the epoch or measured it on other images); ``links["nearest"]["units"]``,
        per extracted channel, ``[run, epoch, layer, channel, similarity]`` rows.
    """
    linked = {run_id: m for run_id, m in manifests.items() if files.get(run_id)}
    if not linked:
        return {}
    indices = _response_indices(files, linked)
    rows_of = {
        key: {tuple(r): i for i, r in enumerate(index.units.itertuples(index=False, name=None))}
        for key, index in indices.items()
    }
    links: dict[str, dict[str, dict]] = {}
    for run_id, manifest in linked.items():
        mine = files[run_id]
        name, epochs = manifest["name"], manifest["epochs"]
        links[name] = {}
        last = max(e for e in epochs if e in mine) if any(e in mine for e in epochs) else None
        for layer, channels in manifest["channels"].items():
            matches = {}
            for other_id, other in linked.items():
                if other_id == run_id:
                    continue
                theirs = files[other_id]
                per_kind: dict[str, list] = {"best": [], "shown": [], "one_to_one": []}
                for epoch in epochs:
                    usable = (
                        epoch in mine
                        and epoch in theirs
                        and layer in mine[epoch]["layers"]
                        and layer in theirs[epoch]["layers"]
                        and bool(other["channels"].get(layer))
                        and _same_images(mine[epoch], theirs[epoch])
                    )
                    found = (
                        match_units(
                            mine[epoch]["layers"][layer]["units"],
                            theirs[epoch]["layers"][layer]["units"],
                            channels,
                            other["channels"][layer],
                        )
                        if usable
                        else None
                    )
                    for kind, values in per_kind.items():
                        values.append(None if found is None else found[kind])
                matches[other["name"]] = per_kind
            nearest = []
            if last is not None and layer in mine[last]["layers"]:
                sample = _sample_key(mine[last])  # units measured on other images are not compared
                queries = [rows_of[sample][(name, last, layer, c)] for c in channels]
                found = indices[sample].nearest_each(queries, k)
                nearest = [
                    [
                        [r.run, int(r.epoch), r.layer, int(r.channel), round(float(r.similarity), 3)]
                        for r in found[found["query"] == q].itertuples()
                    ]
                    for q in queries
                ]
            links[name][layer] = {
                "epochs": epochs,
                "channels": channels,
                "matches": matches,
                "nearest": {"epoch": last, "units": nearest},
            }
    return links


def write_links(atlas: str | Path, manifest: dict, links: dict[str, dict]) -> dict:
    """One run part's links (``{layer: links}`` of :func:`unit_links`) as scripts in
    ``<atlas>/runs/<run>/links/``; returns the manifest with ``links``: ``{layer: path}``."""
    folder = Path(atlas) / "runs" / manifest["name"]
    paths = {}
    for layer, payload in links.items():
        paths[layer] = f"links/{layer}.js"
        key = json.dumps(f"{manifest['name']}|{layer}")
        with atomic_write(folder / paths[layer]) as f:
            f.write("window.PROTOVIZ_LINKS = window.PROTOVIZ_LINKS || {};\n")
            f.write(f"window.PROTOVIZ_LINKS[{key}] = {json.dumps(payload)};\n")
    return {**manifest, "links": paths}
