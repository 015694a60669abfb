"""The run report's choices (which units, which curves); the whole report is tested in tests/stages/test_report.py."""

import pandas as pd
import pytest

from protoviz_core.config import DistanceParams, ReportParams
from protoviz_core.report import ReportError, _curves, montage_units


class _Store:
    def __init__(self, channels):
        self.index = pd.DataFrame([{"layer": layer, "channel": c} for layer, chans in channels.items() for c in chans])


def test_montage_units_are_listed_ones_or_evenly_spaced_extracted_ones():
    store = _Store({"layer1": [0, 10, 20, 30, 40], "layer3": [5, 6]})
    assert montage_units(store, ReportParams(units_per_layer=2)) == [
        ("layer1", 0), ("layer1", 40), ("layer3", 5), ("layer3", 6)]
    assert montage_units(store, ReportParams(units=["layer3:6", "layer1:20"])) == [("layer3", 6), ("layer1", 20)]
    with pytest.raises(ReportError, match=r"report.units: layer1:21 was not extracted.*layer1 \[0, 10, 20, 30, 40\]"):
        montage_units(store, ReportParams(units=["layer1:21"]))


def test_curves_show_only_the_configured_view():
    rows = [{"space": s, "metric": "mse", "masked": True, "layer": "layer1", "epoch": e, "quantity": "diversity",
             "value": v} for s, e, v in [("pixel", 0, 1.0), ("pixel", 1, 2.0), ("resnet50", 0, 9.0)]]
    curves = _curves(pd.DataFrame(rows), "diversity", DistanceParams(space="pixel"), "clrjit")
    assert curves["mean"].tolist() == [1.0, 2.0] and set(curves.line) == {"clrjit"}
