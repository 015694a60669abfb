import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import to_hex
from PIL import Image

from protoviz_core.presentation.figures import (
    CONDITION_COLORS,
    curve_frame,
    development_montage,
    dimmed_surround,
    layer_sort_key,
    line_panels,
    save_figure,
)


def _curves():
    rows = []
    for layer in ("layer10", "layer2", "layer1"):
        for aug in ("keepclr", "clrjit"):
            for epoch in range(3):
                rows.append(
                    {
                        "layer": layer,
                        "line": aug,
                        "epoch": epoch,
                        "mean": epoch + (aug == "clrjit"),
                        "sem": 0.1,
                        "n": 3,
                    }
                )
    return pd.DataFrame(rows)


def test_line_panels_one_panel_per_layer_in_network_order_with_labelled_axes():
    curves = curve_frame(_curves(), panel="layer")
    assert list(curves.columns) == ["panel", "line", "epoch", "mean", "sem", "n"]
    figure = line_panels(curves, y_label="diversity", title="t", colors=CONDITION_COLORS)
    axes = figure.axes
    assert [ax.get_title() for ax in axes] == ["layer1", "layer2", "layer10"]
    assert all(ax.get_xlabel() == "epoch" for ax in axes) and axes[0].get_ylabel() == "diversity"
    lines = {line.get_label(): line for line in axes[0].get_lines()}
    assert set(lines) == {"clrjit (n=3)", "keepclr (n=3)"}
    assert to_hex(lines["clrjit (n=3)"].get_color()) == to_hex(CONDITION_COLORS["clrjit"])
    assert list(lines["clrjit (n=3)"].get_ydata()) == [1, 2, 3]
    assert len(axes[0].collections) == 2  # one SEM band per condition
    assert [t.get_text() for t in axes[-1].get_legend().get_texts()] == ["clrjit (n=3)", "keepclr (n=3)"]
    plt.close(figure)


def test_line_panels_without_sem_draws_no_band_and_refuses_empty():
    figure = line_panels(
        curve_frame(_curves().drop(columns=["sem", "n"]), panel="layer"), y_label="y", title="t"
    )
    assert all(len(ax.collections) == 0 for ax in figure.axes)
    plt.close(figure)
    with pytest.raises(ValueError, match="nothing to draw"):
        line_panels(curve_frame(_curves().iloc[:0], panel="layer"), y_label="y", title="empty")


def test_line_panels_draws_only_a_curve_frame_and_curve_frame_names_a_missing_column():
    with pytest.raises(ValueError, match="curve_frame"):
        line_panels(_curves(), y_label="y", title="raw")  # a "layer" column, no "panel"
    with pytest.raises(ValueError, match="no column seed"):
        curve_frame(_curves(), panel="seed")
    chosen = curve_frame(_curves().rename(columns={"mean": "median"}), panel="layer", mean="median")
    assert chosen["mean"].tolist() == _curves()["mean"].tolist()


def test_layer_sort_key_orders_numbers_numerically():
    assert sorted(["layer4", "layer10", "layer3.1", "layer3"], key=layer_sort_key) == [
        "layer3",
        "layer3.1",
        "layer4",
        "layer10",
    ]


def test_a_dimmed_surround_keeps_the_field_bright_and_the_rest_visible():
    images = torch.full((2, 3, 4, 4), 200, dtype=torch.uint8)
    mask = torch.zeros(4, 4)
    mask[1:3, 1:3] = 1.0
    shown = dimmed_surround(images, mask)
    assert shown.dtype == torch.uint8 and shown[:, :, 1, 1].eq(200).all()  # inside the field: as it is
    assert shown[:, :, 0, 0].eq(60).all()  # outside: dimmed to 0.3, not black
    assert dimmed_surround(images, None) is images


def test_development_montage_has_a_cell_per_unit_and_epoch(tmp_path):
    images = torch.randint(0, 255, (2, 3, 3, 8, 8), dtype=torch.uint8)
    figure = development_montage(images, units=["layer1:0", "layer2:5"], epochs=[0, 10, 20], title="t")
    assert len(figure.axes) == 6
    assert [ax.get_title() for ax in figure.axes[:3]] == ["epoch 0", "epoch 10", "epoch 20"]
    assert [figure.axes[i].get_ylabel() for i in (0, 3)] == ["layer1:0", "layer2:5"]
    shown = figure.axes[4].get_images()[0].get_array()
    assert np.array_equal(np.asarray(shown), images[1, 1].permute(1, 2, 0).numpy())
    path = save_figure(figure, tmp_path / "m.png")
    assert Image.open(path).format == "PNG"
    with pytest.raises(ValueError, match="do not match"):
        development_montage(images, units=["a"], epochs=[0, 10, 20], title="t")
