import pandas as pd

from protoviz_core.pipeline.config import DistanceParams
from protoviz_core.pipeline.metric_keys import (
    comparison_keys,
    distance_key,
    distance_layers,
    in_view,
    layer_of,
    probe_key,
    view_label,
)


def test_names_round_trip_and_views_are_spelt_once():
    key = distance_key("diversity", "resnet50", "mse", True, "layer3")
    assert key == "diversity/resnet50/mse-masked/layer3" and layer_of(key) == "layer3"
    assert (
        distance_key("consistency", "pixel", "cosine", False, "layer1") == "consistency/pixel/cosine/layer1"
    )
    assert probe_key("logreg") == "probe/logreg"
    assert distance_layers([key, "probe/logreg", "diversity/pixel/mse/layer1"]) == ["layer1", "layer3"]
    view = DistanceParams(space="pixel", metric="mse", masked=True)
    keys = comparison_keys(["layer1"], view)
    assert keys[:3] == ["probe/logreg", "probe/linearsvc", "probe/adam"]
    assert "rate_of_change/pixel/mse-masked/layer1" in keys and keys[-1] == "extract/superstimulus/layer1"
    # 3 readouts, 3 quantities, 8 noise-floor measures and 3 of specificity of layer1, its superstimulus ratio
    assert "diversity_to_floor_low/pixel/mse-masked/layer1" in keys
    assert "specificity_high/pixel/mse-masked/layer1" in keys
    assert len(keys) == 3 + 3 + 8 + 3 + 1
    assert view_label(view) == "pixel, mse, RF-masked"


def test_in_view_keeps_only_the_chosen_space_metric_and_masking():
    table = pd.DataFrame(
        [
            {"space": s, "metric": m, "masked": k, "value": i}
            for i, (s, m, k) in enumerate(
                [
                    ("pixel", "mse", True),
                    ("pixel", "mse", False),
                    ("pixel", "cosine", True),
                    ("resnet50", "mse", True),
                ]
            )
        ]
    )
    assert in_view(table, DistanceParams(space="pixel", metric="mse", masked=True)).value.tolist() == [0]
