import hashlib
import json
from pathlib import Path

import pytest

from protoviz_core.pipeline.config import ParamsError, load_params, parse_params
from tests.helpers import tiny_params

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["params.yaml", "configs/paper.yaml"])
def test_committed_params_are_valid(path):
    params = load_params(REPO / path)
    assert params.aug in ("clrjit", "keepclr")


def test_paper_config_is_the_papers_setup():
    params = load_params(REPO / "configs/paper.yaml")
    assert (params.data.name, params.data.image_size, params.train.epochs) == ("stl10", 96, 100)
    assert (params.train.lr, params.train.momentum, params.train.weight_decay) == (0.06, 0.9, 5e-4)
    # Sec. 6.2: every channel of layer1-4 at every checkpoint; Sec. 2.2: extracted twice;
    # Sec. 6.3: 200 samples.
    x = params.extract
    assert (x.epochs, x.layers, x.channels_per_layer, x.repeats) == (
        "all",
        ["layer1", "layer2", "layer3", "layer4"],
        None,
        2,
    )
    assert (x.generator, params.rfmask.samples, params.embed.weights) == ("deepsim_fc6", 200, "imagenet")
    assert len(params.embed.nets) == 10
    # Fig. 2: ResNet50 embeddings, MSE (Sec. 3.3); Fig. 3: layer3 units 1, 2, 12, 98 at epochs 0, 10, ..., 90.
    assert (params.distance.space, params.distance.metric, params.distance.masked) == (
        "resnet50",
        "mse",
        True,
    )
    assert params.report.units == ["layer3:1", "layer3:2", "layer3:12", "layer3:98"]
    assert params.report.montage_epochs == list(range(0, 100, 10))


def _error(raw) -> str:
    with pytest.raises(ParamsError) as caught:
        parse_params(raw)
    return str(caught.value)


def test_unknown_key_names_the_key_and_the_allowed_ones():
    raw = tiny_params()
    raw["train"]["epoch"] = 3
    message = _error(raw)
    assert "train.epoch: unknown key" in message
    assert "epochs" in message and "batch_size" in message


def test_bad_choice_names_the_allowed_values():
    message = _error({**tiny_params(), "aug": "foo"})
    assert message.startswith("params.yaml: aug:")
    assert "'clrjit'" in message and "'keepclr'" in message and "'foo'" in message


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("train", "epochs", -1, "train.epochs"),
        ("train", "lr", "fast", "train.lr"),
        ("train", "device", "tpu", "train.device"),
        ("data", "image_size", 4, "data.image_size"),
        ("data", "name", "cifar", "data.name"),
    ],
)
def test_wrong_type_or_range_names_the_key(section, key, value, expected):
    raw = tiny_params()
    raw[section][key] = value
    message = _error(raw)
    assert expected in message and repr(value) in message


def test_stl10_needs_a_root_and_96_px():
    raw = tiny_params()
    raw["data"] = {"name": "stl10", "image_size": 96}
    assert "data.root: required" in _error(raw)
    raw["data"] = {"name": "stl10", "root": "/x", "image_size": 48}
    assert "data.image_size: STL10 images are 96 px" in _error(raw)


def test_batch_larger_than_data_is_refused():
    assert "train.batch_size: 64 exceeds data.synthetic.n_unlabeled" in _error(
        tiny_params(batch_size=64, epochs=1)
        | {"data": {"name": "synthetic", "image_size": 24, "synthetic": {"n_unlabeled": 32}}}
    )


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("aug: [unclosed")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)


def test_training_hash_ignores_nothing_that_changes_training():
    base = parse_params(tiny_params())
    assert parse_params(tiny_params()).training_hash() == base.training_hash()
    assert parse_params(tiny_params(lr=0.1)).training_hash() != base.training_hash()
    assert parse_params({**tiny_params(), "aug": "keepclr"}).training_hash() != base.training_hash()


def test_sections_added_later_at_their_defaults_leave_earlier_runs_their_identity():
    """Runs made before the similarity and decoder stages existed keep their MLflow run: at
    their defaults the sections are left out of the hash, as are the keys that change only speed."""
    base = parse_params({})
    dumped = base.model_dump()
    del (
        dumped["similarity"],
        dumped["decoder"],
        dumped["train"]["method"],
        dumped["train"]["backbone"],
        dumped["train"]["state_every"],
    )
    keys = [k for k in type(base).model_fields if k not in ("distance", "report", "similarity", "decoder")]
    payload = json.dumps({k: dumped[k] for k in keys}, sort_keys=True)
    assert base.measurement_hash() == hashlib.sha256(payload.encode()).hexdigest()[:24]
    faster = parse_params(
        {
            "similarity": {"batch_size": 16, "device": "cpu"},
            "train": {"state_every": 3},
            "decoder": {"device": "cpu"},
        }
    )
    assert faster.measurement_hash() == base.measurement_hash()
    assert parse_params({"similarity": {"images": 1000}}).measurement_hash() != base.measurement_hash()
    # The decoder prior's params count only where it is the prior: otherwise the stage trains nothing.
    assert parse_params({"decoder": {"epochs": 5}}).measurement_hash() == base.measurement_hash()
    decoder = {"generator": "decoder", "generator_weights": "out/decoder.pt"}
    assert (
        parse_params({"extract": decoder, "decoder": {"epochs": 5}}).measurement_hash()
        != parse_params({"extract": decoder}).measurement_hash()
    )


def test_views_do_not_change_the_measurement_identity():
    base = parse_params({})
    view = parse_params({"distance": {"metric": "cosine"}, "report": {"montage_epochs": 3}})
    other = parse_params({"extract": {"repeats": 3}})
    assert base.measurement_hash() == view.measurement_hash() != other.measurement_hash()


@pytest.mark.parametrize("value, message", [(0, "a stride must be >= 1"), ([], "list at least one epoch")])
def test_montage_epochs_are_a_stride_or_a_list(value, message):
    assert parse_params({"report": {"montage_epochs": [0, 10]}}).report.montage_epochs == [0, 10]
    with pytest.raises(ParamsError, match=f"report.montage_epochs: {message}"):
        parse_params({"report": {"montage_epochs": value}})


@pytest.mark.parametrize("value, message", [(0, "a stride must be >= 1"), ([], "list at least one epoch")])
def test_extract_epochs_are_all_a_stride_or_a_nonempty_list(value, message):
    with pytest.raises(ParamsError, match=f"extract.epochs: {message}"):
        parse_params({"extract": {"epochs": value}})


@pytest.mark.parametrize(
    "unit, message", [("layer3-17", "is not 'layer:channel'"), ("layer9:1", "unknown layer")]
)
def test_report_units_are_checked(unit, message):
    with pytest.raises(ParamsError, match=f"report.units: .*{message}"):
        parse_params({"report": {"units": [unit]}})


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("train", "lr", float("inf")),
        ("train", "weight_decay", float("nan")),
        ("extract", "adam_lr", float("inf")),
        ("extract", "cma_sigma", float("nan")),
    ],
)
def test_non_finite_numbers_are_refused_with_their_key(section, key, value):
    with pytest.raises(ParamsError, match=rf"{section}\.{key}: .*finite"):
        parse_params({section: {key: value}})


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        (
            "extract",
            "epochs",
            [0, 99],
            "extract.epochs: epochs [99] are not in this run's 0..2 (train.epochs)",
        ),
        ("report", "montage_epochs", [3], "report.montage_epochs: epochs [3] are not in this run's 0..2"),
        (
            "report",
            "units",
            ["layer3:9999"],
            "report.units: 'layer3:9999' names channel 9999 of layer3, which has channels 0..255",
        ),
        ("report", "units", ["layer1.0.conv1:64"], "channel 64 of layer1.0.conv1, which has channels 0..63"),
    ],
)
def test_epochs_and_channels_the_run_will_not_have_are_refused_before_any_stage(
    section, key, value, expected
):
    raw = tiny_params(epochs=2)
    raw[section] = {key: value}
    assert expected in _error(raw)
    raw[section] = {key: value[:-1] + ([2] if key.endswith("epochs") else ["layer3:255"])}
    parse_params(raw)  # the last epoch and the last channel are fine


def test_maco_needs_its_spectrum_file_and_exemplars_never_see_the_query_split():
    assert "extract.generator_weights: maco needs the magnitude spectrum, out/spectrum.pt" in _error(
        {**tiny_params(epochs=2), "extract": {"generator": "maco"}}
    )
    maco = parse_params(
        {"extract": {"generator": "maco", "generator_weights": "out/spectrum.pt", "robustness": True}}
    )
    assert maco.extract.robustness and maco.read_unit == "top_left"  # the authors' unit unless asked
    assert "exemplars.splits: the test split holds the readability stage's queries" in _error(
        {**tiny_params(epochs=2), "exemplars": {"splits": ["train", "test"]}}
    )
    assert "read_unit" in _error({**tiny_params(epochs=2), "read_unit": "middle"})


def test_a_yaml_alias_bomb_is_refused_at_once_with_its_line(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    lines += ["report:", "  units: *a8"]  # 9**9 values if expanded
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ParamsError, match=r"params.yaml: line 2: a YAML alias \(\*name\)"):
        load_params(path)
    path.write_text("seed: 3\ndata:\n  image_size: 32\n")  # plain YAML still loads
    assert load_params(path).seed == 3
