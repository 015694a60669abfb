"""The extract stage as DVC runs it: SIGKILL and resume, metrics, MLflow, PNG export, bad input."""

import json
import os
import signal
import time

import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image

from protoviz_core.prototypes.store import StoreError, open_prototypes
from tests.helpers import (
    STAGE_ARGS,
    call_stage,
    newest_run,
    run_stage,
    start_stage,
    tiny_extract,
    tiny_params,
    write_params,
)

EXTRACT_ARGS = STAGE_ARGS["extract"]


def _find_exemplars(project) -> None:
    run_stage("exemplars", project, *STAGE_ARGS["exemplars"])


def test_killed_extraction_resumes_and_exports(project):
    tmp_path = project
    params = tiny_params(epochs=2)
    params["extract"] = tiny_extract(channels_per_layer=2, cma_steps=2, cma_popsize=6, adam_steps=3)
    write_params(tmp_path / "params.yaml", params)
    _find_exemplars(tmp_path)

    process = start_stage("extract", tmp_path, *EXTRACT_ARGS)
    shards = tmp_path / "out/prototypes/shards"
    deadline = time.time() + 240
    while not (shards.is_dir() and any(p.suffix == ".pt" for p in shards.iterdir())):
        assert process.poll() is None and time.time() < deadline, "extraction ended before the kill"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.pt")}
    assert 1 <= len(kept) < 12 and not (tmp_path / "out/prototypes/index.parquet").exists()

    run_stage("extract", tmp_path, *EXTRACT_ARGS)
    after = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.pt")}
    assert len(after) == 12 and all(after[name] == stamp for name, stamp in kept.items())
    index = pd.read_parquet(tmp_path / "out/prototypes/index.parquet")
    assert len(index) == 3 * 2 * 2 * 2 and set(index.aug) == {"clrjit"} and set(index.seed) == {1}
    assert len(open_prototypes(tmp_path / "out/prototypes").select(epoch=1, layer="layer2")) == 4

    metrics = json.loads((tmp_path / "metrics/extract.json").read_text())
    assert metrics["prototypes"] == 24 and metrics["epoch"] == 2 and set(metrics) >= {"layer1", "layer2"}
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = newest_run(client)
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "extract/activation/layer1"))
    assert steps == [0, 1, 2]
    # The superstimulus ratio: each prototype's activation over its unit's best sampled image's.
    driven = index.natural_best > 0
    assert driven.mean() > 0.5 and index.natural_best.notna().all()
    assert ((index.superstimulus - index.activation / index.natural_best)[driven].abs() < 1e-9).all()
    assert index.superstimulus[~driven].isna().all()  # a unit no sampled image drives has no ratio
    ratios = client.get_metric_history(run.info.run_id, "extract/superstimulus/layer2")
    assert sorted(m.step for m in ratios) == [0, 1, 2]
    assert {m.step: m.value for m in ratios}[2] == pytest.approx(
        index[(index.epoch == 2) & (index.layer == "layer2")].superstimulus.median()
    )
    assert metrics["layer2"]["superstimulus_median"] == pytest.approx({m.step: m.value for m in ratios}[2])

    out = run_stage(
        "extract",
        tmp_path,
        "export",
        "--store",
        "out/prototypes",
        "--out",
        "grid.png",
        "--layer",
        "layer1",
        "--epoch",
        "0",
        "1",
        "--columns",
        "4",
    )
    assert "wrote 8 prototypes" in out
    status, _, stderr = call_stage(
        "extract", tmp_path, "export", "--store", "out/prototypes", "--out", "none.png", "--epoch", "7"
    )
    assert status == 2 and stderr.strip().splitlines() == [
        "error: no prototypes match {'epoch': [7]} in out/prototypes; the store holds epochs [0, 1, 2] "
        "and layers ['layer1', 'layer2']"
    ]
    with Image.open(tmp_path / "grid.png") as picture:
        assert picture.size == (4 * 24 + 3 * 2, 2 * 24 + 2)

    # A shard holding another shard's bytes (a store pulled from a remote without verify, which
    # DVC believes current) is refused with advice that works: the forced extract stage redoes
    # that shard alone, to its own bytes.
    first, second = sorted(shards.glob("*.pt"))[:2]
    good = first.read_bytes()
    first.write_bytes(second.read_bytes())
    store = open_prototypes(tmp_path / "out/prototypes")
    with pytest.raises(StoreError, match=rf"{first.name}: .*run dvc repro --force --single-item extract"):
        store.images(store.select(**_shard_selection(first.name)))
    stamps = {p.name: p.stat().st_mtime_ns for p in shards.glob("*.pt")}
    run_stage("extract", tmp_path, *EXTRACT_ARGS)
    assert first.read_bytes() == good
    assert [p.name for p in shards.glob("*.pt") if p.stat().st_mtime_ns != stamps[p.name]] == [first.name]

    # An uninterrupted run of the same configuration
    run_stage(
        "extract",
        tmp_path,
        "--checkpoints",
        "out/checkpoints",
        "--exemplars",
        "out/exemplars",
        "--store",
        "out/straight",
        "--metrics",
        "metrics/straight.json",
    )
    for name in after:
        resumed, straight = (
            torch.load(folder / "shards" / name, weights_only=True)
            for folder in (tmp_path / "out/prototypes", tmp_path / "out/straight")
        )
        assert resumed["key"] == straight["key"], name
        assert torch.equal(resumed["images"], straight["images"]) and torch.equal(
            resumed["channels"], straight["channels"]
        )


def _shard_selection(name: str) -> dict:
    """The index selection of a shard file named ``e0001-layer2-r1.pt``."""
    epoch, layer, repeat = name.removesuffix(".pt").split("-")
    return {"epoch": int(epoch[1:]), "layer": layer, "repeat": int(repeat[1:])}


def _extract_params(**extract) -> dict:
    params = tiny_params(epochs=2)
    one_layer = {"layers": ["layer1"], "channels_per_layer": 4, "repeats": 1, "adam_steps": 1, "epochs": [2]}
    params["extract"] = tiny_extract(**{**one_layer, **extract})
    return params


def test_bad_generator_weights_stop_with_one_line_before_any_shard_is_touched(project):
    write_params(project / "params.yaml", _extract_params())
    _find_exemplars(project)
    run_stage("extract", project, *EXTRACT_ARGS)
    shards = {p.name: p.read_bytes() for p in (project / "out/prototypes/shards").iterdir()}
    truncated = project / "upconvGAN_fc6.pt"
    torch.save({"defc7.weight": torch.zeros(4096, 4096)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    wrong = project / "other.pt"
    torch.save({"conv.weight": torch.zeros(3)}, wrong)
    faults = {
        "absent.pt": "absent.pt: DeePSiM weights not found; download upconvGAN_fc6.pt",
        str(truncated): "upconvGAN_fc6.pt: not readable as weights-only torch tensors",
        str(wrong): "other.pt: not DeePSiM fc6 weights",
    }
    for weights, message in faults.items():
        write_params(
            project / "params.yaml", _extract_params(generator="deepsim_fc6", generator_weights=weights)
        )
        status, _, stderr = call_stage("extract", project, *EXTRACT_ARGS)
        assert status == 2 and "Traceback" not in stderr
        assert stderr.strip().splitlines()[-1].startswith("error: ") and message in stderr
        assert {p.name: p.read_bytes() for p in (project / "out/prototypes/shards").iterdir()} == shards


def test_a_selection_larger_than_a_layer_uses_all_its_channels_and_says_so(project):
    write_params(project / "params.yaml", _extract_params(channels_per_layer=1000))
    _find_exemplars(project)
    stdout = run_stage("extract", project, *EXTRACT_ARGS)
    assert "extract.channels_per_layer: 1000 is more than the 64 channels of layer1; using all 64" in stdout
    assert sorted(open_prototypes(project / "out/prototypes").index.channel) == list(range(64))


def test_png_shards_hold_the_same_prototypes_and_switching_format_does_not_resynthesise(project):
    write_params(project / "params.yaml", _extract_params(shard_format="png"))
    _find_exemplars(project)
    run_stage("extract", project, *EXTRACT_ARGS)
    shard = project / "out/prototypes/shards/e0002-layer1-r1.pt"
    as_png = torch.load(shard, weights_only=True)
    assert "png" in as_png and "images" not in as_png
    png_pixels = open_prototypes(project / "out/prototypes").images(
        open_prototypes(project / "out/prototypes").index
    )

    write_params(project / "params.yaml", _extract_params(shard_format="raw"))
    stdout = run_stage("extract", project, *EXTRACT_ARGS)
    assert "re-encoded 1 shards as raw" in stdout
    as_raw = torch.load(shard, weights_only=True)
    # Not synthesised again
    assert as_raw["key"] == as_png["key"] and torch.equal(as_raw["latents"], as_png["latents"])
    store = open_prototypes(project / "out/prototypes")
    assert torch.equal(store.images(store.index), png_pixels)
    write_params(project / "params.yaml", _extract_params(shard_format="raw", cma_steps=2))  # a real change
    run_stage("extract", project, *EXTRACT_ARGS)
    assert torch.load(shard, weights_only=True)["key"] != as_raw["key"]


def test_missing_or_foreign_exemplars_stop_extraction_before_synthesis(project):
    write_params(project / "params.yaml", _extract_params())
    status, _, stderr = call_stage("extract", project, *EXTRACT_ARGS)
    assert status == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        "error: out/exemplars/e0002.pt: missing or unreadable; run dvc repro "
        "exemplars (it writes one file per extracted checkpoint)"
    )
    assert not (project / "out/prototypes/shards").exists()
    write_params(project / "params.yaml", _extract_params(epochs=[1]))
    _find_exemplars(project)  # epoch 1's file, then renamed as epoch 2's: found on another checkpoint
    (project / "out/exemplars/e0001.pt").rename(project / "out/exemplars/e0002.pt")
    write_params(project / "params.yaml", _extract_params())
    status, _, stderr = call_stage("extract", project, *EXTRACT_ARGS)
    assert status == 2 and "e0002.pt: found on another checkpoint than" in stderr.strip().splitlines()[-1]
