"""The comparison of runs (``stages.compare``): the report's curves with every condition in
each panel as mean ± SEM over seeds (Fig. 2, 4B, 5-7; and the superstimulus ratio), a table of final probe
accuracies, each run's own curves (``per_run.csv``: training loss and probe accuracies
per epoch), and the list of runs used (also ``runs.csv``) and skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from protoviz_core.pipeline.config import DistanceParams
from protoviz_core.pipeline.metric_keys import (
    QUANTITIES,
    READOUTS,
    TRAIN_LOSS,
    distance_key,
    extract_key,
    layer_of,
    probe_key,
    view_label,
)
from protoviz_core.presentation.aggregate import (
    FLOOR_MEASURE,
    SIGNIFICANCE,
    condition_differences,
    final_values,
    mean_sem,
)
from protoviz_core.presentation.atlas import write_viewer
from protoviz_core.presentation.comparison import RunSelection
from protoviz_core.presentation.figures import (
    CHANCE_LABEL,
    CONDITION_COLORS,
    FLOOR_LABEL,
    curve_frame,
    line_panels,
    save_figure,
)
from protoviz_core.presentation.htmlpage import HtmlPage
from protoviz_core.presentation.report import FLOORED, quantity_figure


def _per_condition(stats: pd.DataFrame, panel: str, y_label: str, title: str, **options) -> Figure:
    """Mean +- SEM over seeds (``stats``: one row per ``panel`` value, condition and epoch), one line per
    condition; ``options`` go to :func:`line_panels`."""
    curves = curve_frame(stats, panel=panel, line="condition")
    return line_panels(curves, y_label=y_label, colors=CONDITION_COLORS, title=title, **options)


def _differences_section(page: HtmlPage, out: Path, of_view: Callable[[str], pd.DataFrame]) -> None:
    """Which between-condition differences of the distance quantities clear the seeds' spread and
    the noise floor (:func:`~protoviz_core.presentation.aggregate.condition_differences`): ``differences.csv``
    (every layer and epoch) and the last epoch's table on the page."""
    parts = []
    for quantity, measure in FLOOR_MEASURE.items():
        values = of_view(quantity)
        if values.empty or values.condition.nunique() < 2:
            continue
        for end in ("low", "high"):
            bound = of_view(f"{measure}_{end}")[["run_id", "layer", "epoch", "value"]]
            values = values.merge(
                bound.rename(columns={"value": end}), on=["run_id", "layer", "epoch"], how="left"
            )
        parts.append(values.assign(quantity=quantity))
    if not parts:
        return
    differences = condition_differences(pd.concat(parts, ignore_index=True))
    if differences.empty:  # the conditions share no layer (other backbones)
        return
    differences.to_csv(out / "differences.csv", index=False)
    last = differences[differences.epoch == differences.epoch.max()]
    page.heading("Differences between conditions")
    page.text(
        f"A difference is called one only where it clears both the seeds' spread (Welch's t-test over "
        f"seeds, p < {SIGNIFICANCE}; one seed per condition cannot) and the noise floor (the conditions' "
        "95% bootstrap intervals over units of the floor-relative measure do not overlap: diversity and "
        "rate of change as ratios to the floor, consistency itself). "
        f"Findings at epoch {int(differences.epoch.max())}: {int(last.finding.sum())} of {len(last)}; "
        "every layer and epoch in differences.csv.",
        note=True,
    )
    page.table(last.round(4))


def _similarity_between_section(page: HtmlPage, out: Path, table: pd.DataFrame) -> None:
    """Layers and units of two runs side by side: linear CKA, and how well units match one to one,
    per layer over epochs, mean ± SEM over the pairs of runs of each kind (two conditions, or
    two seeds of one). ``table``: :func:`protoviz_core.presentation.comparison.similarity_between`."""
    table.to_csv(out / "similarity_between.csv", index=False)
    page.heading("Runs side by side: whole layers (CKA) and single units (matching)")
    for quantity, file, y_label, title in (
        ("cka", "cka_between.png", "linear CKA between the runs", "CKA of the same layer in two runs"),
        (
            "matched",
            "unit_matches.png",
            "median correlation of matched units",
            "units matched one to one across runs (Hungarian, by correlation)",
        ),
    ):
        chosen = table[table.quantity == quantity].rename(columns={"pair": "line"})
        if quantity == "matched":  # the control: the same matching with one run's images shuffled
            chance = table[table.quantity == "matched_chance"].rename(columns={"pair": "line"})
            chosen = pd.concat([chosen, chance.assign(line=chance.line + " " + CHANCE_LABEL)])
        curves = mean_sem(chosen, ["layer", "line", "epoch"])
        colors = {pair: f"C{i}" for i, pair in enumerate(sorted(table.pair.unique()))}
        figure = line_panels(curve_frame(curves, panel="layer"), y_label=y_label, title=title, colors=colors)
        page.image(save_figure(figure, out / file), title)
    page.text(
        "Both runs' layers respond to the same held-out test images. CKA 1: the same representation "
        "up to rotation and scale. Matching pairs each unit of one run with one unit of the other "
        "so that the summed correlation of their activations is largest (Li et al., ICLR 2016); "
        "shown: the median over units; dashed, the same matching with one run's images shuffled, "
        "which pairs unrelated units (the largest of many chance correlations): matches near it "
        "are no better than chance. Mean ± SEM over the pairs of runs of each kind "
        "(similarity_between.csv has every pair); pairs share runs (three seeds make three pairs "
        "of three runs), so they are not independent and the SEM understates the spread. "
        "docs/similarity.md has the method.",
        note=True,
    )


def write_comparison(
    out: str | Path,
    *,
    selection: RunSelection,
    histories: pd.DataFrame,
    view: DistanceParams,
    atlas_runs: list[dict],
    similarity: pd.DataFrame | None = None,
) -> Path:
    """Cross-condition figures (mean ± SEM over seeds), the final probe table and ``index.html``.

    Args:
        histories: :func:`protoviz_core.presentation.comparison.metric_histories` of the used runs, keys
            ``probe/<readout>`` and ``<quantity>/<space>/<metric>[-masked]/<layer>``.
        atlas_runs: manifests of run parts already in ``out/atlas/runs`` (may be empty).
        similarity: :func:`protoviz_core.presentation.comparison.similarity_between` of the used runs; None
            or empty: no such section.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    page = HtmlPage("protoviz comparison: " + ", ".join(sorted(selection.used.condition.unique())))
    runs = _runs_section(page, out, selection)
    _per_run_table(out, histories, runs)
    _probe_comparison_section(page, out, histories)

    def of_view(quantity: str) -> pd.DataFrame:
        """``quantity``'s rows of the view, with their layer."""
        keys = {
            distance_key(quantity, view.space, view.metric, view.masked, layer_of(key))
            for key in histories.key
        }
        chosen = histories[histories.key.isin(keys)]
        return chosen.assign(layer=chosen.key.map(layer_of))

    _distance_comparison_sections(page, out, of_view, view)
    _differences_section(page, out, of_view)
    _superstimulus_comparison_section(page, out, histories)
    if similarity is not None and not similarity.empty:
        _similarity_between_section(page, out, similarity)
    if atlas_runs:
        page.heading("Prototype atlas")
        write_viewer(out / "atlas", atlas_runs)
        page.link("atlas/index.html", "Open the atlas: both conditions side by side")
    return page.write(out / "index.html")


def _runs_section(page: HtmlPage, out: Path, selection: RunSelection) -> pd.DataFrame:
    """The runs used (``runs.csv``), the ones skipped and why, and params they differ in; returns the runs."""
    page.heading("Runs used")
    runs = selection.used[["condition", "method", "backbone", "aug", "seed", "name", "dvc_exp", "run_id"]]
    page.table(runs)
    runs.to_csv(out / "runs.csv", index=False)  # which MLflow runs the figures and tables are made of
    if not selection.skipped.empty:
        page.text(
            "Skipped: "
            + "; ".join(f"{r.name} ({r.run_id}): {r.reason}" for r in selection.skipped.itertuples())
        )
    if selection.differing_params:
        page.text(
            "Warning: the runs differ in more than condition and seed: "
            + "; ".join(f"{key} = {', '.join(values)}" for key, values in selection.differing_params.items())
        )
    return runs


def _per_run_table(out: Path, histories: pd.DataFrame, runs: pd.DataFrame) -> None:
    """``per_run.csv``: each run's own curves, the numbers behind every mean, one row per (run, epoch)."""
    per_run = histories[histories.key.isin([TRAIN_LOSS] + [probe_key(r) for r in READOUTS])]
    if per_run.empty:
        return
    wide = per_run.pivot_table(index=["condition", "seed", "run_id", "epoch"], columns="key", values="value")
    wide = wide.rename(
        columns=lambda key: "loss" if key == TRAIN_LOSS else key.split("/", 1)[1]
    ).reset_index()
    wide = wide.merge(runs[["run_id", "name"]], on="run_id")
    columns = ["condition", "seed", "name", "run_id", "epoch"] + [c for c in ["loss", *READOUTS] if c in wide]
    wide[columns].to_csv(out / "per_run.csv", index=False)


def _probe_comparison_section(page: HtmlPage, out: Path, histories: pd.DataFrame) -> None:
    """Probe accuracy per condition over epochs (``probe.csv``) and at each run's last epoch
    (``final_probe.csv``), mean ± SEM over seeds."""
    probe = histories[histories.key.isin([probe_key(r) for r in READOUTS])]
    if probe.empty:
        return
    readout_of = {probe_key(r): r for r in READOUTS}
    page.heading("Linear-probe accuracy")
    stats = mean_sem(probe.assign(readout=probe.key.map(readout_of)), ["readout", "condition", "epoch"])
    figure = _per_condition(
        stats,
        "readout",
        "test accuracy",
        "Linear-probe accuracy, mean ± SEM over seeds",
        panel_order=[r for r in READOUTS if r in set(stats.readout)],
    )
    page.image(save_figure(figure, out / "probe.png"), "probe accuracy per condition")
    # The figure's numbers: readout, condition, epoch, mean, sem, n.
    stats.to_csv(out / "probe.csv", index=False)
    final = mean_sem(
        final_values(probe).assign(readout=lambda f: f.key.map(readout_of)), ["condition", "readout"]
    )
    final_table = final.rename(columns={"n": "seeds"})
    final_table.to_csv(out / "final_probe.csv", index=False)
    page.text("Final linear-probe accuracy (each run's last epoch), mean and SEM over seeds:")
    page.table(final_table)


def _distance_comparison_sections(
    page: HtmlPage, out: Path, of_view: Callable[[str], pd.DataFrame], view: DistanceParams
) -> None:
    """Diversity, rate of change and consistency per condition (``<quantity>.csv``), the first two
    with each condition's noise floor and its interval over units."""
    floor = mean_sem(of_view("consistency"), ["layer", "condition", "epoch"])
    for end in ("low", "high"):  # the floor's interval over units, averaged over seeds
        bound = mean_sem(of_view(f"consistency_{end}"), ["layer", "condition", "epoch"])
        floor = floor.merge(
            bound[["layer", "condition", "epoch", "mean"]].rename(columns={"mean": end}),
            on=["layer", "condition", "epoch"],
            how="left",
        )
    for quantity in QUANTITIES:
        chosen = of_view(quantity)
        if chosen.empty:
            continue
        stats = mean_sem(chosen, ["layer", "condition", "epoch"])
        curves = stats.rename(columns={"condition": "line"})
        if quantity in FLOORED and not floor.empty:
            floor_lines = floor.assign(line=floor.condition + f" {FLOOR_LABEL}").drop(columns="condition")
            curves = pd.concat([curves, floor_lines], ignore_index=True)
        quantity_figure(
            page, curves, quantity, out, f"{view_label(view)}; mean ± SEM over seeds", "per condition"
        )
        stats.to_csv(out / f"{quantity}.csv", index=False)


def _superstimulus_comparison_section(page: HtmlPage, out: Path, histories: pd.DataFrame) -> None:
    """Each run's median superstimulus ratio per layer, mean ± SEM over seeds (``superstimulus.csv``)."""
    ratio_keys = {extract_key("superstimulus", layer_of(key)) for key in histories.key}
    ratios = histories[histories.key.isin(ratio_keys)]
    if ratios.empty:
        return
    stats = mean_sem(ratios.assign(layer=ratios.key.map(layer_of)), ["layer", "condition", "epoch"])
    page.heading("Prototypes against the data (superstimulus ratio)")
    figure = _per_condition(
        stats,
        "layer",
        "prototype / best natural image",
        "Median superstimulus ratio per run; mean ± SEM over seeds",
        log_y=True,
        reference=(1.0, "best natural image"),
    )
    page.image(save_figure(figure, out / "superstimulus.png"), "superstimulus ratio per condition")
    stats.to_csv(out / "superstimulus.csv", index=False)
