"""Links between the atlas's runs: which unit of one run is which unit of another.

Channel numbers are arbitrary, so "unit 17" of two runs are unrelated units (except at
epoch 0 of two runs of one seed, which share their initial weights). For each run part
of a comparison's atlas, and each of its layers, one script file holds:

- **matches**: for each extracted unit at each epoch, its partner in every other run at
  the same epoch by the correlation of their activations on the similarity stage's
  held-out images (:func:`protoviz_core.measures.similarity.match_units`): the best of all the
  other run's units, the best of those with prototypes (the one the atlas can show), and
  the Hungarian one-to-one partner (Li et al. 2016);
- **nearest**: for each extracted unit at the run's last epoch, the ``k`` units of any
  run, epoch and layer that respond most alike (:class:`protoviz_core.measures.neighbours.UnitIndex`
  over the extracted units measured on the same images, cosine of centred activations =
  correlation).

Layout, beside :mod:`protoviz_core.presentation.atlas`'s::

    <atlas>/runs/<run>/links/<layer>.js     window.PROTOVIZ_LINKS["<run>|<layer>"] = {...}

One file per (run, layer), loaded by the viewer only when a unit of that layer is shown:
at the paper's scale (6 runs, 101 epochs, 960 units) a run's links are tens of MB, which
the viewer's ``runs.js`` must not carry. Scripts, not JSON: a page opened from disk may not
fetch files.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import torch

from protoviz_core.infra.atomic import atomic_write
from protoviz_core.infra.work import Contents
from protoviz_core.measures.neighbours import UnitIndex, centred_responses
from protoviz_core.measures.similarity import (
    MATCH_KINDS,
    invert_assignment,
    match_units,
    one_to_one,
    unit_correlations,
)

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
                vectors.append(centred_responses(contents["layers"][layer]["units"][:, channels]))
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
            (:func:`protoviz_core.presentation.comparison.similarity_files`).
        manifests: ``{run_id: manifest}`` of the atlas's run parts
            (:func:`protoviz_core.presentation.atlas.write_run_part`); runs without files get no links.

    Returns:
        ``{run name: {layer: links}}``; ``links["matches"][other run][kind]`` holds, per epoch
        of the run part, ``[channel, correlation]`` per extracted channel (None where the other
        run lacks the epoch or measured it on other images); ``links["nearest"]["units"]``,
        per extracted channel, ``[run, epoch, layer, channel, similarity]`` rows.
    """
    linked = {run_id: m for run_id, m in manifests.items() if files.get(run_id)}
    if not linked:
        return {}
    # Every run's matches in every other run start empty (None per epoch) and are filled pair by pair.
    matches = {
        run_id: {
            layer: {
                other["name"]: {kind: [None] * len(manifest["epochs"]) for kind in MATCH_KINDS}
                for other_id, other in linked.items()
                if other_id != run_id
            }
            for layer in manifest["channels"]
        }
        for run_id, manifest in linked.items()
    }
    for first, second in itertools.combinations(linked, 2):
        _match_pair(files, linked, first, second, matches)
    nearest = _nearest_units(files, linked, k)
    return {
        manifest["name"]: {
            layer: {
                "epochs": manifest["epochs"],
                "channels": channels,
                "matches": matches[run_id][layer],
                "nearest": nearest[run_id][layer],
            }
            for layer, channels in manifest["channels"].items()
        }
        for run_id, manifest in linked.items()
    }


def _match_pair(
    files: dict[str, dict[int, Contents]], manifests: dict[str, dict], first: str, second: str, matches: dict
) -> None:
    """Fill ``matches`` both ways for one pair of runs: each (epoch, layer)'s correlations and
    one-to-one assignment are computed once, the second run's view is their transpose."""
    a, b = manifests[first], manifests[second]
    for layer in set(a["channels"]) & set(b["channels"]):
        for epoch in sorted(set(a["epochs"]) | set(b["epochs"])):  # each run's own epochs get entries
            mine, theirs = files[first].get(epoch), files[second].get(epoch)
            if (
                mine is None
                or theirs is None
                or layer not in mine["layers"]
                or layer not in theirs["layers"]
                or not _same_images(mine, theirs)
            ):
                continue
            correlations = unit_correlations(mine["layers"][layer]["units"], theirs["layers"][layer]["units"])
            assigned = one_to_one(correlations)
            forward = match_units(correlations, assigned, a["channels"][layer], b["channels"][layer])
            inverse = invert_assignment(*assigned, correlations.shape[1])
            backward = match_units(correlations.T, inverse, b["channels"][layer], a["channels"][layer])
            for run_id, other, found in ((first, b, forward), (second, a, backward)):
                if epoch not in manifests[run_id]["epochs"]:
                    continue
                at = manifests[run_id]["epochs"].index(epoch)
                for kind in MATCH_KINDS:
                    matches[run_id][layer][other["name"]][kind][at] = found[kind]


def _nearest_units(files: dict[str, dict[int, Contents]], manifests: dict[str, dict], k: int) -> dict:
    """Per run and layer, ``{"epoch": its last epoch with files, "units": per extracted channel the
    k units of any run, epoch and layer measured on the same images that respond most alike}``."""
    indices = _response_indices(files, manifests)
    rows_of = {
        key: {tuple(r): i for i, r in enumerate(index.units.itertuples(index=False, name=None))}
        for key, index in indices.items()
    }
    nearest: dict[str, dict] = {}
    for run_id, manifest in manifests.items():
        mine = files[run_id]
        name = manifest["name"]
        measured = [e for e in manifest["epochs"] if e in mine]
        last = max(measured) if measured else None
        nearest[run_id] = {}
        for layer, channels in manifest["channels"].items():
            units = []
            if last is not None and layer in mine[last]["layers"]:
                sample = _sample_key(mine[last])  # units measured on other images are not compared
                queries = [rows_of[sample][(name, last, layer, c)] for c in channels]
                found = indices[sample].nearest_each(queries, k)
                units = [
                    [
                        [r.run, int(r.epoch), r.layer, int(r.channel), round(float(r.similarity), 3)]
                        for r in found[found["query"] == q].itertuples()
                    ]
                    for q in queries
                ]
            nearest[run_id][layer] = {"epoch": last, "units": units}
    return nearest


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
