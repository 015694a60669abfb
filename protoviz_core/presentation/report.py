"""The report of one run: figure files plus one HTML page, a list of sections.

Run report (paper Fig. 1-8 for one run), in ``<out>/``:

    prototypes_<layer>.png   every extracted channel at the last epoch, surround dimmed (Fig. 1)
    development.png          chosen units x epochs 0, k, 2k, ... and the last, or listed ones (Fig. 3, 8)
    superstimulus.png, .csv  per layer vs epoch: prototype activation / best natural activation
                             (median and quartiles; protoviz's measure, not the paper's)
    exemplars.png            the montage's units at the last epoch: prototype beside its top natural images
    probe.png                linear-probe accuracy vs epoch, three readouts (Fig. 4A)
    diversity.png, rate_of_change.png, consistency.png
                             per layer vs epoch in the configured space and metric (Fig. 2, 5-7)
    index.html               all of the above in one self-contained page
    atlas/                   the prototype atlas of this run (protoviz_core.presentation.atlas)

The comparison of runs is :mod:`protoviz_core.presentation.comparison_report`'s.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from protoviz_core.engine.units import spaced_channels, unit_position
from protoviz_core.infra.atomic import save_image
from protoviz_core.infra.errors import ProtovizError
from protoviz_core.infra.work import prune
from protoviz_core.measures.exemplars import ExemplarSet
from protoviz_core.measures.masks import MaskSet
from protoviz_core.measures.readability import EXPLANATIONS
from protoviz_core.measures.similarity import SETTLED_CKA
from protoviz_core.models.backbones import BACKBONE_ARCH, build_backbone
from protoviz_core.pipeline.config import DistanceParams, ReportParams
from protoviz_core.pipeline.metric_keys import (
    QUANTITIES,
    READOUTS,
    in_view,
    view_label,
)
from protoviz_core.presentation.atlas import write_run_part, write_viewer
from protoviz_core.presentation.figures import (
    CONDITION_COLORS,
    EXPLANATION_COLORS,
    FLOOR_LABEL,
    QUANTITY_LABELS,
    READOUT_COLORS,
    curve_frame,
    development_montage,
    dimmed_surround,
    exemplar_rows,
    line_panels,
    save_figure,
)
from protoviz_core.presentation.htmlpage import HtmlPage
from protoviz_core.presentation.montage import grid, thumbnails
from protoviz_core.prototypes.store import PrototypeStore
from protoviz_core.prototypes.superstimulus import ratio_summary
from protoviz_core.training.checkpoints import choose_epochs

PAGE_THUMB = 48  # pixels per prototype in the page's inlined grids


class ReportError(ProtovizError, ValueError):
    """The inputs cannot make the report asked for; the message names the param or file."""


def unit_position_note(
    backbone: torch.nn.Module,
    layer: str,
    image_size: int,
    mask: torch.Tensor,
    epoch: int,
    read_unit: str = "top_left",
) -> str:
    """Which unit of the layer's map the prototypes belong to, and where in the image it looks.

    Every prototype maximises one unit per channel: the middle one of the layer's map; where
    a side is even (no middle), the one up and left of it (``top_left``) or the mean of the
    middle two (``centred``). With padded strided convolutions even a middle unit need not
    look at the image's centre, so the note quotes where the layer's receptive-field mask
    (rfmask stage) peaks.

    Args:
        backbone: an (untrained) backbone of the run's architecture in eval mode: only its
            map sizes are read.
        mask: (S, S) the layer's RF mask at ``epoch``.
    """
    (height, width), (rows, columns) = unit_position(backbone, layer, image_size, read_unit)
    if height % 2 and width % 2:
        which = "the map's middle"
    elif read_unit == "top_left":
        which = "up and left of the map's middle (a map with an even side has none)"
    else:
        which = (
            "the mean of the positions around the map's middle (a map with an even side has no middle one)"
        )
    span = [f"{s.start}" if s.stop - s.start == 1 else f"{s.start}-{s.stop - 1}" for s in (rows, columns)]
    peak_y, peak_x = divmod(int(mask.argmax()), mask.shape[1])
    centre = (image_size - 1) / 2
    return (
        f"{layer}'s map is {height} x {width} at {image_size} px; "
        f"the unit read is ({span[0]}, {span[1]}), {which}. "
        f"Its receptive field peaks at pixel ({peak_y}, {peak_x}) at epoch {epoch} (the image's centre is "
        f"({centre:g}, {centre:g})): its prototypes show what it prefers there."
    )


def montage_units(store: PrototypeStore, settings: ReportParams) -> list[tuple[str, int]]:
    """The (layer, channel) rows of the development montage: ``report.units`` or evenly spaced ones.

    Raises:
        ReportError: a unit in ``report.units`` was not extracted.
    """
    extracted = {
        layer: sorted(int(c) for c in group.channel.unique())
        for layer, group in store.index.groupby("layer", sort=False)
    }
    if settings.units is None:
        return [
            (layer, channels[int(i)])
            for layer, channels in extracted.items()
            for i in spaced_channels(len(channels), settings.units_per_layer)
        ]
    units = []
    for unit in settings.units:
        layer, _, channel = unit.partition(":")
        if int(channel) not in extracted.get(layer, []):
            raise ReportError(
                f"report.units: {unit} was not extracted; extracted layers and channels: "
                + "; ".join(
                    f"{name} {chans[:6]}{'...' if len(chans) > 6 else ''}"
                    for name, chans in extracted.items()
                )
            )
        units.append((layer, int(channel)))
    return units


# The figures that carry the noise floor (re-evolution consistency of the same units) as a band.
FLOORED = ("diversity", "rate_of_change")


def _curves(table: pd.DataFrame, quantity: str, view: DistanceParams, condition: str) -> pd.DataFrame:
    """One run's curve of ``quantity`` (layer, line, epoch, mean); for :data:`FLOORED` quantities
    also its noise floor, with the floor's bootstrap interval over units as low and high."""
    chosen = in_view(table, view)
    curves = chosen[chosen.quantity == quantity].assign(line=condition)
    curves = curves.rename(columns={"value": "mean"})[["layer", "line", "epoch", "mean"]]
    if quantity not in FLOORED or curves.empty:
        return curves
    floor = chosen[chosen.quantity.isin(["consistency", "consistency_low", "consistency_high"])]
    if floor.empty:  # one repeat: no floor
        return curves
    floor = floor.pivot_table(index=["layer", "epoch"], columns="quantity", values="value").reset_index()
    floor = floor.rename(
        columns={"consistency": "mean", "consistency_low": "low", "consistency_high": "high"}
    )
    return pd.concat([curves, floor.assign(line=f"{condition} {FLOOR_LABEL}")], ignore_index=True)


def quantity_figure(
    page: HtmlPage, curves: pd.DataFrame, quantity: str, out: Path, view_title: str, caption: str
) -> None:
    """A distance quantity's section of a page: its heading and one panel per layer, a line per
    condition (``curves``: layer, line, epoch, mean[, sem]), saved as ``<quantity>.png``."""
    page.heading(QUANTITY_LABELS[quantity])
    figure = line_panels(
        curve_frame(curves, panel="layer"),
        y_label=quantity.replace("_", " "),
        colors=CONDITION_COLORS,
        title=f"{QUANTITY_LABELS[quantity]}; {view_title}",
    )
    page.image(save_figure(figure, out / f"{quantity}.png"), f"{quantity} {caption}")
    if quantity in FLOORED:
        page.text(
            f"Dashed, with its band: the {FLOOR_LABEL}, the distance between two searches of the same "
            "units (re-evolution consistency; band: 95% bootstrap interval over units). A curve inside "
            "the band differs no more than searching again would make it.",
            note=True,
        )


def _readability_section(
    page: HtmlPage, out: Path, table: pd.DataFrame, distances: pd.DataFrame, view: DistanceParams, title: str
) -> None:
    """The machine 2-AFC per layer over epochs (prototypes against the exemplars' yardstick and the
    control), then specificity in the observer's space and in the distance view."""
    page.heading("Readability: what an observer learns from the prototypes")
    scores = table[table.explanation.isin(EXPLANATIONS)]
    curves = curve_frame(
        scores[["layer", "explanation", "epoch", "median"]], panel="layer", line="explanation", mean="median"
    )
    figure = line_panels(
        curves,
        y_label="2-AFC correct (median over units)",
        colors=EXPLANATION_COLORS,
        reference=(0.5, "chance"),
        title=f"{title}: machine 2-AFC readability",
    )
    page.image(save_figure(figure, out / "readability.png"), "2-AFC readability vs epoch per layer")
    page.text(
        "For each unit, an observer that shares no weights with the network (a colour and "
        "edge-orientation descriptor, looking at explanations through the unit's receptive field) "
        "picks which of two test images drives the unit harder: one of its top 5 or one of its "
        "bottom 30%. It is shown the unit's prototypes, or its top natural exemplars (the "
        "yardstick), or another unit's exemplars (the control, which should sit at chance). "
        "docs/readability.md has the task.",
        note=True,
    )
    last = table[table.epoch == table.epoch.max()].pivot(
        index="layer", columns="explanation", values="median"
    )
    page.table(last.reset_index())

    page.heading("Specificity: one unit searched twice, against two units")
    observer = table[table.explanation == "specificity"][["layer", "epoch", "median"]]
    pixel = in_view(distances, view)
    pixel = pixel[pixel.quantity == "specificity"][["layer", "epoch", "value"]]
    lines = pd.concat(
        [
            observer.rename(columns={"median": "mean"}).assign(line="observer's features"),
            pixel.rename(columns={"value": "mean"}).assign(line=view_label(view)),
        ],
        ignore_index=True,
    ).dropna()
    if lines.empty:
        page.text("No specificity: one repeat per unit has nothing to compare.", note=True)
        return
    figure = line_panels(
        curve_frame(lines, panel="layer"),
        y_label="re-evolution / between-unit distance",
        reference=(1.0, "no more alike than two units"),
        title=f"{title}: specificity (lower: a unit's searches agree)",
    )
    page.image(save_figure(figure, out / "specificity.png"), "specificity vs epoch per layer")


def _similarity_section(
    page: HtmlPage, out: Path, table: pd.DataFrame, distances: pd.DataFrame, view: DistanceParams, title: str
) -> None:
    """Each layer's linear CKA to its final and first form over epochs, beside its prototypes'
    rate of change (divided by its largest value, so that both read on one axis)."""
    page.heading("Layers settling: CKA to the final epoch, beside the prototypes' rate of change")
    change = _curves(distances, "rate_of_change", view, "prototypes")
    change = change[change.line == "prototypes"]
    largest = change.groupby("layer")["mean"].transform("max")
    lines = pd.concat(
        [
            table[["layer", "epoch", "cka_to_final"]]
            .rename(columns={"cka_to_final": "mean"})
            .assign(line="layer: CKA to the final epoch"),
            table[["layer", "epoch", "cka_to_initial"]]
            .rename(columns={"cka_to_initial": "mean"})
            .assign(line="layer: CKA to the first epoch"),
            change.assign(mean=change["mean"] / largest, line="prototypes: rate of change / its largest"),
        ],
        ignore_index=True,
    )
    figure = line_panels(
        curve_frame(lines[lines.layer.isin(set(table.layer))], panel="layer"),
        y_label="CKA; rate of change / largest",
        reference=(SETTLED_CKA, f"settled ({SETTLED_CKA})"),
        title=f"{title}: how far each layer is from its final form",
    )
    page.image(
        save_figure(figure, out / "cka.png"), "CKA to the final epoch per layer, and the rate of change"
    )
    page.text(
        "Linear CKA (unbiased estimator) between the layer's responses to the same held-out test "
        "images at two epochs: 1 is the same representation up to rotation and scale. A layer has "
        "settled from the first epoch from which its CKA to the final epoch stays at or above "
        f"{SETTLED_CKA}. "
        "docs/similarity.md has the method.",
        note=True,
    )


def write_run_report(
    out: str | Path,
    *,
    store: PrototypeStore,
    masks: MaskSet,
    distances: pd.DataFrame,
    probe: pd.DataFrame,
    settings: ReportParams,
    view: DistanceParams,
    run_name: str,
    exemplars: ExemplarSet | None = None,
    readability: pd.DataFrame | None = None,
    unit_scores: dict[int, dict] | None = None,
    similarity: pd.DataFrame | None = None,
    arch: str = BACKBONE_ARCH,
    read_unit: str = "top_left",
    log: Callable[[str], None] = print,
    on_atlas_epoch: Callable[[int], None] = lambda epoch: None,
) -> Path:
    """Every figure of one run, its atlas and ``index.html`` in ``out``; returns the page's path.

    Args:
        store: the run's prototypes.
        masks: the rfmask stage's masks.
        distances: the distance stage's tidy table (space, metric, masked, layer, epoch, quantity, value).
        probe: the probe stage's table (epoch, logreg, linearsvc, adam).
        run_name: the atlas folder and label of this run.
        exemplars: the exemplars stage's natural exemplars; None: a report without them.
        readability: the readability stage's table (epoch, layer, explanation, median, mean);
            None: a report without it.
        unit_scores: the readability stage's per-unit results (``{epoch: contents}``), shown in the atlas.
        similarity: the similarity stage's table (epoch, layer, cka_to_final, cka_to_initial);
            None: a report without it.
        read_unit: the params' ``read_unit`` (which unit of a map the prototypes are of).
        on_atlas_epoch: called after each epoch of the atlas is written (progress).
    """
    run = _RunInReport.of(Path(out), store, masks, run_name)
    page = HtmlPage(f"protoviz report: {run.title}")
    page.text(
        f"Run {run_name}. Epochs with prototypes: {run.epochs[0]}..{run.last} ({len(run.epochs)}); "
        f"layers {', '.join(run.layers)}; distances in {view_label(view)} space.",
        note=True,
    )
    _prototypes_section(page, run, arch, read_unit)
    units = _development_section(page, run, settings)
    _superstimulus_section(
        page, run.out, store, units, exemplars, run.last, run.first_repeat, title=run.title, masks=masks
    )
    if readability is not None:
        _readability_section(page, run.out, readability, distances, view, title=run.title)
    if similarity is not None:
        _similarity_section(page, run.out, similarity, distances, view, title=run.title)
    _probe_section(page, run, probe)
    for quantity in QUANTITIES:
        curves = _curves(distances, quantity, view, run.aug)
        if curves.empty:
            log(f"report: no {quantity} in {view_label(view)} space; figure skipped")
            continue
        quantity_figure(page, curves, quantity, run.out, f"{view_label(view)}", "vs epoch per layer")
    _atlas_section(page, run, settings, exemplars, unit_scores, log, on_atlas_epoch)
    return page.write(run.out / "index.html")


@dataclass(frozen=True)
class _RunInReport:
    """What every section of one run's report reads: its folder, prototypes, masks and their extent."""

    out: Path
    store: PrototypeStore
    masks: MaskSet
    name: str
    aug: str
    seed: int
    layers: list[str]  # in network order
    epochs: list[int]  # with prototypes
    first_repeat: int

    @classmethod
    def of(cls, out: Path, store: PrototypeStore, masks: MaskSet, name: str) -> _RunInReport:
        index = store.index
        return cls(
            out=out,
            store=store,
            masks=masks,
            name=name,
            aug=str(index.aug.iloc[0]),
            seed=int(index.seed.iloc[0]),
            layers=list(dict.fromkeys(index.layer)),
            epochs=sorted(int(e) for e in index.epoch.unique()),
            first_repeat=int(index["repeat"].min()),
        )

    @property
    def last(self) -> int:
        return self.epochs[-1]

    @property
    def title(self) -> str:
        return f"{self.aug}, seed {self.seed}"


def _prototypes_section(page: HtmlPage, run: _RunInReport, arch: str, read_unit: str) -> None:
    """Every extracted unit of each layer at the last epoch, surround dimmed, with where the unit looks."""
    page.heading(
        f"Prototypes at epoch {run.last} (outside the receptive field dimmed, repeat {run.first_repeat})"
    )
    last_masks = run.masks.for_epoch(run.last, run.layers)
    untrained = build_backbone(arch).eval()  # for the layers' map sizes in the unit notes
    for layer in run.layers:
        rows = run.store.select(epoch=run.last, layer=layer, repeat=run.first_repeat).sort_values("channel")
        images = dimmed_surround(run.store.images(rows), last_masks[layer])
        path = save_image(grid(images), run.out / f"prototypes_{layer}.png")
        page.text(
            f"{layer}: {len(rows)} channels ({int(rows.channel.min())}..{int(rows.channel.max())}), "
            f"row by row in channel order. "
            + unit_position_note(
                untrained,
                layer,
                images.shape[-1],
                last_masks[layer],
                run.masks.source_epoch(run.last),
                read_unit,
            )
        )
        # The page stays small at full scale (960 channels): it inlines thumbnails, the file has every pixel.
        small = io.BytesIO()
        grid(thumbnails(images, PAGE_THUMB)).save(small, format="PNG")
        page.image(small.getvalue(), f"prototypes of {layer} at epoch {run.last}")
        page.link(path.name, f"{path.name} (full resolution)")


def _development_section(page: HtmlPage, run: _RunInReport, settings: ReportParams) -> list[tuple[str, int]]:
    """The montage's units over training (``report.units``, ``report.montage_epochs``); returns the units."""
    page.heading("Development of single units (outside the receptive field dimmed)")
    units = montage_units(run.store, settings)
    try:  # a stride (0, k, 2k, ... and the last) or the listed epochs
        shown_epochs = choose_epochs(run.epochs, settings.montage_epochs, key="report.montage_epochs")
    except ValueError as exc:
        raise ReportError(f"{exc} (extracted epochs)") from None
    pictures = []
    for layer, channel in units:
        rows = run.store.select(
            layer=layer, channel=channel, repeat=run.first_repeat, epoch=shown_epochs
        ).sort_values("epoch")
        pictures.append(
            torch.stack(
                [
                    dimmed_surround(
                        run.store.images(rows.iloc[[i]]), run.masks.for_epoch(int(epoch), [layer])[layer]
                    )[0]
                    for i, epoch in enumerate(rows.epoch)
                ]
            )
        )
    figure = development_montage(
        torch.stack(pictures),
        units=[f"{layer}:{c}" for layer, c in units],
        epochs=shown_epochs,
        title=f"{run.title}: units over training",
    )
    page.image(save_figure(figure, run.out / "development.png"), "development montage")
    return units


def _probe_section(page: HtmlPage, run: _RunInReport, probe: pd.DataFrame) -> None:
    """Each readout's test accuracy over epochs, and the table."""
    page.heading("Linear-probe accuracy")
    readouts = pd.concat(
        [
            probe[["epoch"]].assign(line=name, mean=probe[name], panel="frozen features")
            for name in READOUTS
            if name in probe
        ]
    )
    figure = line_panels(
        curve_frame(readouts, panel="panel"),
        y_label="test accuracy",
        colors=READOUT_COLORS,
        title=f"{run.title}: linear probe",
    )
    page.image(save_figure(figure, run.out / "probe.png"), "probe accuracy vs epoch")
    page.table(probe)


def _atlas_section(
    page: HtmlPage,
    run: _RunInReport,
    settings: ReportParams,
    exemplars: ExemplarSet | None,
    unit_scores: dict[int, dict] | None,
    log: Callable[[str], None],
    on_epoch: Callable[[int], None],
) -> None:
    """This run's part of the atlas and its viewer in ``atlas/``; files of other configurations removed."""
    page.heading("Prototype atlas")
    # The report folder persists across configurations: drop what this run did not make.
    prune(run.out, [f"prototypes_{layer}.png" for layer in run.layers], log, pattern="prototypes_*.png")
    prune(run.out / "atlas" / "runs", [run.name], log, pattern="*/")
    manifest = write_run_part(
        run.store,
        run.masks,
        run.out / "atlas" / "runs" / run.name,
        name=run.name,
        thumb_size=settings.thumb_size,
        exemplars=exemplars,
        readability=unit_scores,
        log=log,
        on_epoch=on_epoch,
    )
    write_viewer(run.out / "atlas", [manifest])
    page.link("atlas/index.html", "Open the atlas: any unit, any epoch, both repeats (opens from disk)")


def check_exemplars_match(store: PrototypeStore, exemplars: ExemplarSet) -> None:
    """Refuse exemplars other than those the store's ratios were computed with.

    Raises:
        ReportError: an exemplar file's best activation differs from the index's ``natural_best``.
    """
    for (epoch, layer), rows in store.index.groupby(["epoch", "layer"]):
        if int(epoch) not in exemplars.by_epoch:
            raise ReportError(f"no exemplars for epoch {epoch}; run dvc repro (exemplars, then extract)")
        best, _ = exemplars.top(int(epoch), layer, rows.channel.tolist())
        if not torch.allclose(
            best[:, 0].double(), torch.tensor(rows.natural_best.to_numpy()), rtol=1e-5, equal_nan=True
        ):
            raise ReportError(
                f"the exemplars of epoch {epoch}, {layer} are not those the prototype index was "
                "built with; run dvc repro (exemplars, then extract)"
            )


def _superstimulus_section(
    page: HtmlPage,
    out: Path,
    store: PrototypeStore,
    units: list[tuple[str, int]],
    exemplars: ExemplarSet | None,
    last: int,
    repeat: int,
    title: str,
    masks: MaskSet | None = None,
) -> None:
    """The superstimulus ratio over training per layer, and the montage's units beside their exemplars
    (each prototype's surround dimmed by its layer's RF mask at ``last``, when ``masks`` are given)."""
    page.heading("Prototypes against the data (superstimulus ratio)")
    stats = ratio_summary(store.index)
    if stats.empty:
        page.text("No ratios: the prototype index was built without natural exemplars.", note=True)
        return
    stats.to_csv(out / "superstimulus.csv", index=False)
    # Without n: it counts prototypes, not runs (what the legend's n means).
    frame = stats.drop(columns="n").assign(
        panel=stats.layer, line="median, quartile band", mean=stats["median"], low=stats.q25, high=stats.q75
    )
    figure = line_panels(
        curve_frame(frame, panel="panel"),
        y_label="prototype / best natural image",
        reference=(1.0, "best natural image"),
        log_y=True,
        title=f"{title}: prototype activation / best activation of sampled data images",
    )
    page.image(save_figure(figure, out / "superstimulus.png"), "superstimulus ratio vs epoch per layer")
    final = stats[stats.epoch == last]
    page.text(
        f"Epoch {last}, median ratio per layer: "
        + "; ".join(
            f"{r.layer} {r.median:.2f} (n={r.n}"
            f"{f', {r.no_yardstick} units no sampled image drives' if r.no_yardstick else ''})"
            for r in final.itertuples()
        )
        + ". Above 1, a prototype drives its unit harder than any sampled image."
    )
    if exemplars is None:
        return
    check_exemplars_match(store, exemplars)
    rows = pd.concat(
        [store.select(epoch=last, layer=layer, channel=channel, repeat=repeat) for layer, channel in units]
    )
    prototypes = store.images(rows)
    if masks is not None:
        shown = masks.for_epoch(last, list(dict.fromkeys(layer for layer, _ in units)))
        prototypes = torch.stack(
            [dimmed_surround(image[None], shown[layer])[0] for image, (layer, _) in zip(prototypes, units)]
        )
    tops = [exemplars.top(last, layer, [channel]) for layer, channel in units]
    pictures = torch.stack(
        [torch.from_numpy(exemplars.pool.images(positions[0].numpy())) for _, positions in tops]
    )
    figure = exemplar_rows(
        prototypes,
        pictures,
        units=[f"{layer}:{channel}" for layer, channel in units],
        prototype_labels=[
            f"{r.activation:.2f} ({r.superstimulus:.2f}x)"
            if pd.notna(r.superstimulus)
            else f"{r.activation:.2f} (no image drives it)"
            for r in rows.itertuples()
        ],
        exemplar_labels=[[f"{v:.2f}" for v in values[0].tolist()] for values, _ in tops],
        title=f"{title}, epoch {last}: prototype (activation, x best natural) beside the top "
        f"{exemplars.top_k} of {exemplars.sample_size} sampled images",
    )
    page.image(save_figure(figure, out / "exemplars.png"), "prototypes beside their natural exemplars")
