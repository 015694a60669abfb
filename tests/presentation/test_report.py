"""The run report's choices (which units, which curves); the whole report is tested in
tests/stages/test_report.py."""

import pandas as pd
import pytest
import torch

from protoviz_core.models.backbones import build_backbone
from protoviz_core.pipeline.config import DistanceParams, ReportParams
from protoviz_core.presentation.report import ReportError, _curves, montage_units, unit_position_note


class _Store:
    def __init__(self, channels):
        self.index = pd.DataFrame(
            [{"layer": layer, "channel": c} for layer, chans in channels.items() for c in chans]
        )


def test_montage_units_are_listed_ones_or_evenly_spaced_extracted_ones():
    store = _Store({"layer1": [0, 10, 20, 30, 40], "layer3": [5, 6]})
    assert montage_units(store, ReportParams(units_per_layer=2)) == [
        ("layer1", 0),
        ("layer1", 40),
        ("layer3", 5),
        ("layer3", 6),
    ]
    assert montage_units(store, ReportParams(units=["layer3:6", "layer1:20"])) == [
        ("layer3", 6),
        ("layer1", 20),
    ]
    with pytest.raises(
        ReportError, match=r"report.units: layer1:21 was not extracted.*layer1 \[0, 10, 20, 30, 40\]"
    ):
        montage_units(store, ReportParams(units=["layer1:21"]))


def test_curves_show_only_the_configured_view():
    rows = [
        {
            "space": s,
            "metric": "mse",
            "masked": True,
            "layer": "layer1",
            "epoch": e,
            "quantity": "diversity",
            "value": v,
        }
        for s, e, v in [("pixel", 0, 1.0), ("pixel", 1, 2.0), ("resnet50", 0, 9.0)]
    ]
    curves = _curves(pd.DataFrame(rows), "diversity", DistanceParams(space="pixel"), "clrjit")
    assert curves["mean"].tolist() == [1.0, 2.0] and set(curves.line) == {"clrjit"}


def test_unit_position_note_names_the_unit_read_and_where_its_receptive_field_peaks():
    backbone = build_backbone().eval()
    mask = torch.zeros(48, 48)
    mask[0, 2] = 1.0  # layer4's (0, 0) unit at 48 px looks at the image's corner
    note = unit_position_note(backbone, "layer4", 48, mask, epoch=5)
    assert note.startswith(
        "layer4's map is 2 x 2 at 48 px; the unit read is (0, 0), up and left of the map's middle"
    )
    assert "peaks at pixel (0, 2) at epoch 5 (the image's centre is (23.5, 23.5))" in note
    mask = torch.zeros(96, 96)
    mask[30, 33] = 1.0
    note = unit_position_note(backbone, "layer4", 96, mask, epoch=0)
    assert "3 x 3 at 96 px; the unit read is (1, 1), the map's middle." in note and "pixel (30, 33)" in note


def test_diversity_curves_carry_the_noise_floor_and_its_interval():
    values = {"diversity": 2.0, "consistency": 0.5, "consistency_low": 0.4, "consistency_high": 0.6}
    rows = [
        {
            "space": "pixel",
            "metric": "mse",
            "masked": True,
            "layer": "layer1",
            "epoch": e,
            "quantity": q,
            "value": v,
        }
        for e in (0, 1)
        for q, v in values.items()
    ]
    view = DistanceParams(space="pixel")
    curves = _curves(pd.DataFrame(rows), "diversity", view, "clrjit")
    floor = curves[curves.line == "clrjit noise floor"]
    assert (
        floor["mean"].tolist() == [0.5, 0.5]
        and floor.low.tolist() == [0.4, 0.4]
        and floor.high.tolist() == [0.6, 0.6]
    )
    assert curves[curves.line == "clrjit"]["mean"].tolist() == [2.0, 2.0]
    # consistency is the floor itself: its own figure has no second band
    assert set(_curves(pd.DataFrame(rows), "consistency", view, "clrjit").line) == {"clrjit"}


def test_the_readability_section_draws_one_curve_per_explanation_and_both_specificities(
    tmp_path, monkeypatch
):
    import protoviz_core.presentation.report as report
    from protoviz_core.presentation.htmlpage import HtmlPage

    drawn = []
    monkeypatch.setattr(report, "line_panels", lambda frame, **options: drawn.append(frame) or object())
    monkeypatch.setattr(report, "save_figure", lambda figure, path: b"png")
    rows = [
        {"epoch": e, "layer": layer, "explanation": kind, "median": 0.5 + e / 10, "mean": 0.4}
        for e in (0, 1)
        for layer in ("layer1", "layer2")
        for kind in ("prototypes", "exemplars", "control", "specificity")
    ]
    distances = pd.DataFrame(
        [
            {"space": "pixel", "metric": "mse", "masked": True, "layer": layer, "epoch": e}
            | {"quantity": "specificity", "value": 0.8}
            for e in (0, 1)
            for layer in ("layer1", "layer2")
        ]
    )
    page = HtmlPage("t")
    report._readability_section(page, tmp_path, pd.DataFrame(rows), distances, DistanceParams(), "run")
    scores, specificity = drawn
    assert list(scores.columns) == ["panel", "line", "epoch", "mean"]
    assert sorted(scores.line.unique()) == ["control", "exemplars", "prototypes"]
    assert not scores.duplicated(["panel", "line", "epoch"]).any() and scores["mean"].tolist()[0] == 0.5
    assert sorted(specificity.line.unique()) == ["observer's features", "pixel, mse, RF-masked"]
    assert len(specificity) == 2 * 2 * 2
