"""The paper's figures, drawn with matplotlib (no display needed).

Every curve figure is drawn by one function, :func:`line_panels`, from one frame made by
:func:`curve_frame`: one panel per layer (or readout) in order, one line per condition, an
optional mean +- SEM band.
A single run is one "condition" without a band; the cross-run comparison passes
both conditions with their SEM over seeds. Conditions keep their colour in every
figure (:data:`CONDITION_COLORS`).
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a window

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from protoviz_core.infra.atomic import atomic_write  # noqa: E402
from protoviz_core.models.learners import LEARNERS, PAPER_METHOD  # noqa: E402
from protoviz_core.presentation.montage import surround_gain  # noqa: E402

PANEL_WIDTH = 3.4  # inches per panel of a curve figure
DPI = 110  # saved PNGs: a curve figure is PANEL_WIDTH * DPI pixels wide per panel
# SimCLR's two conditions as the paper's figures draw them; every other learner a pair of tab20's
# shades (darker: clrjit, lighter: keepclr), in the registry's order, cycling after eight.
CONDITION_COLORS = {"clrjit": "tab:blue", "keepclr": "tab:orange"} | {
    f"{method} {aug}": matplotlib.colors.to_hex(matplotlib.colormaps["tab20"]((2 * index + 4 + shade) % 20))
    for index, method in enumerate(name for name in LEARNERS if name != PAPER_METHOD)
    for shade, aug in enumerate(("clrjit", "keepclr"))
}
READOUT_COLORS = {"logreg": "tab:green", "linearsvc": "tab:purple", "adam": "tab:brown"}
EXPLANATION_COLORS = {"prototypes": "tab:red", "exemplars": "tab:green", "control": "0.5"}  # readability
QUANTITY_LABELS = {
    "diversity": "diversity (mean pairwise distance)",
    "rate_of_change": "rate of change (distance to next epoch)",
    "consistency": "re-evolution consistency (distance between repeats)",
}
FLOOR_COLOR = "0.55"  # the noise floor's band, behind every condition's curve
FLOOR_LABEL = "noise floor"  # the line label's suffix: "<condition> noise floor"
CHANCE_LABEL = "images shuffled"  # a control's suffix: "<pair> images shuffled"
_DASHED = (FLOOR_LABEL, CHANCE_LABEL)  # lines drawn dashed, in the colour of the line they belong to


def layer_sort_key(name: str) -> tuple:
    """Order layer names as the network does: layer2 before layer10, layer3.1 after layer3."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


# The columns of line_panels' frame: what every curve needs, and what it may carry.
CURVE_COLUMNS = ("panel", "line", "epoch", "mean")
BAND_COLUMNS = ("sem", "low", "high", "n")


def curve_frame(table: pd.DataFrame, *, panel: str, line: str = "line", mean: str = "mean") -> pd.DataFrame:
    """The frame :func:`line_panels` draws, from ``table``: one row per (panel, line, epoch).

    Args:
        table: has columns ``panel``, ``line``, ``epoch`` and ``mean`` (named by the arguments),
            and may have the band: ``sem`` (mean +- SEM where it is a number), or ``low`` and
            ``high`` (a band between them, e.g. quartiles; a curve whose are NaN gets its SEM
            band), and ``n`` (runs averaged, shown in the legend). Other columns are left out.
        panel: the column with one panel per value (a layer, say).
        line: the column with one curve per value (a condition); a label ending in
            :data:`FLOOR_LABEL` or :data:`CHANCE_LABEL` is drawn dashed, in its condition's colour.
        mean: the column of the curve's values.

    Returns:
        columns :data:`CURVE_COLUMNS` and those of :data:`BAND_COLUMNS` that ``table`` has.

    Raises:
        ValueError: a named column is missing.
    """
    missing = [name for name in (panel, line, "epoch", mean) if name not in table]
    if missing:
        raise ValueError(f"curve_frame: the table has no column {', '.join(missing)}")
    frame = pd.DataFrame(
        {"panel": table[panel], "line": table[line], "epoch": table["epoch"], "mean": table[mean]}
    )
    for name in BAND_COLUMNS:
        if name in table:
            frame[name] = table[name]
    return frame


def line_panels(
    frame: pd.DataFrame,
    *,
    y_label: str,
    title: str,
    colors: dict[str, str] | None = None,
    panel_order: list[str] | None = None,
    reference: tuple[float, str] | None = None,
    log_y: bool = False,
) -> Figure:
    """Curves vs epoch: one panel per ``panel`` value of ``frame``, one line per ``line`` value.

    Args:
        frame: made by :func:`curve_frame`.
        panel_order: panel values in drawing order; default: network order of the names.
        reference: (y, label) of a dashed horizontal line in every panel.
        log_y: a logarithmic y axis (for ratios).

    Raises:
        ValueError: an empty frame (names ``title``), or one not made by :func:`curve_frame`.
    """
    if not set(CURVE_COLUMNS) <= set(frame):
        raise ValueError(f"{title}: line_panels draws a curve_frame (columns {', '.join(CURVE_COLUMNS)})")
    if frame.empty:
        raise ValueError(f"{title}: nothing to draw")
    panels = panel_order or sorted(frame["panel"].unique(), key=layer_sort_key)
    colors = colors or {}
    figure, axes = plt.subplots(
        1,
        len(panels),
        figsize=(PANEL_WIDTH * len(panels), 3.2),
        squeeze=False,
        sharex=True,
        constrained_layout=True,
    )
    for ax, name in zip(axes[0], panels):
        for label, curve in frame[frame["panel"] == name].groupby("line", sort=True):
            curve = curve.sort_values("epoch")
            runs = f" (n={int(curve['n'].max())})" if "n" in curve and curve["n"].max() > 1 else ""
            floor = str(label).endswith(_DASHED)  # dashed, in its condition's colour or grey
            base = str(label).removesuffix(FLOOR_LABEL).removesuffix(CHANCE_LABEL).strip()
            color = colors.get(label) or (colors.get(base, FLOOR_COLOR) if floor else None)
            ax.plot(
                curve["epoch"],
                curve["mean"],
                marker="" if floor else "o",
                markersize=3,
                linestyle="--" if floor else "-",
                color=color,
                label=f"{label}{runs}",
            )
            if {"low", "high"} <= set(curve) and curve["low"].notna().any():
                ax.fill_between(
                    curve["epoch"],
                    curve["low"],
                    curve["high"],
                    alpha=0.25,
                    color=color,
                    linewidth=0,
                )
            elif "sem" in curve and curve["sem"].notna().any():
                low, high = curve["mean"] - curve["sem"], curve["mean"] + curve["sem"]
                ax.fill_between(curve["epoch"], low, high, alpha=0.25, color=color, linewidth=0)
        if reference is not None:
            ax.axhline(reference[0], color="0.3", linestyle="--", linewidth=1, label=reference[1])
        if log_y:
            ax.set_yscale("log")
        ax.set_title(str(name))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(y_label)
    axes[0][-1].legend(fontsize="small")
    figure.suptitle(title)
    return figure


def dimmed_surround(images: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """uint8 (N, 3, S, S) prototypes shown whole, dimmed where their layer's (S, S) RF mask is low.

    Each pixel keeps :func:`~protoviz_core.presentation.montage.surround_gain` of its value: all of it
    where the unit looks, never none, so a small receptive field is a lit window in a
    readable picture, not a few pixels in a black square.
    """
    if mask is None:
        return images
    return (images.float() * surround_gain(mask)).round().clamp(0, 255).to(torch.uint8)


def development_montage(images: torch.Tensor, *, units: list[str], epochs: list[int], title: str) -> Figure:
    """Units (rows) developing over epochs (columns), as the paper's Fig. 3 and 8.

    Args:
        images: uint8 (U, E, 3, S, S): unit u at epoch e.
        units: U row labels, e.g. ``layer3:17``.
        epochs: E column labels.
    """
    count, steps = images.shape[:2]
    if (count, steps) != (len(units), len(epochs)):
        raise ValueError(
            f"images {tuple(images.shape[:2])} do not match {len(units)} units x {len(epochs)} epochs"
        )
    size = 1.1
    figure, axes = plt.subplots(
        count, steps, figsize=(size * steps + 1.2, size * count + 0.8), squeeze=False, constrained_layout=True
    )
    for row in range(count):
        for column in range(steps):
            ax = axes[row][column]
            ax.imshow(images[row, column].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"epoch {epochs[column]}", fontsize="small")
            if column == 0:
                ax.set_ylabel(units[row], fontsize="small")
    figure.suptitle(title)
    return figure


def exemplar_rows(
    prototypes: torch.Tensor,
    exemplars: torch.Tensor,
    *,
    units: list[str],
    prototype_labels: list[str],
    exemplar_labels: list[list[str]],
    title: str,
) -> Figure:
    """Each unit's prototype (first column) beside its top natural images, a row per unit.

    Args:
        prototypes: uint8 (U, 3, S, S).
        exemplars: uint8 (U, k, 3, S, S), best first.
        units: U row labels; prototype_labels: U captions (e.g. its activation and ratio);
        exemplar_labels: U x k captions (e.g. activations).
    """
    count, k = exemplars.shape[:2]
    size = 1.15
    figure, axes = plt.subplots(
        count,
        k + 1,
        figsize=(size * (k + 1) + 1.2, (size + 0.25) * count + 0.8),
        squeeze=False,
        constrained_layout=True,
    )
    for row in range(count):
        pictures = [prototypes[row], *exemplars[row]]
        captions = [prototype_labels[row], *exemplar_labels[row]]
        for column, (image, caption) in enumerate(zip(pictures, captions)):
            ax = axes[row][column]
            ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(caption, fontsize="x-small")
            if column == 0:
                ax.set_ylabel(units[row], fontsize="small")
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:red")
                    spine.set_linewidth(2)
            if row == 0:
                ax.set_title("prototype" if column == 0 else f"natural #{column}", fontsize="small")
    figure.suptitle(title)
    return figure


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG atomically and close it."""
    path = Path(path)
    with atomic_write(path, "wb") as f:
        figure.savefig(f, format="png", dpi=DPI)
    plt.close(figure)
    return path
