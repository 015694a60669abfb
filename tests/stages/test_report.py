"""report and compare on micro runs of both conditions: files, panels, links, MLflow artifacts."""

import errno
import json
import os
import re

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from protoviz_core.presentation.figures import DPI, PANEL_WIDTH
from tests.helpers import (
    STAGE_ARGS,
    call_stage,
    newest_run,
    run_pipeline,
    run_stage,
    stages_from,
    tiny_extract,
    tiny_params,
    write_params,
)

REPORT_ARGS = STAGE_ARGS["report"]


def _micro_run(folder, aug, method="simclr", backbone="resnet18", layers=("layer1", "layer2"), units=None):
    """Every stage of the pipeline, as dvc.yaml runs them, at the smallest useful size."""
    params = tiny_params(epochs=2, method=method, backbone=backbone)
    params["aug"] = aug
    params["probe"] = {"adam_epochs": 2, "device": "cpu"}
    params["extract"] = tiny_extract(layers=list(layers))
    params["rfmask"] = {"layers": list(layers), "samples": 2, "channels_per_layer": 2}
    params["embed"] = {"nets": [], "weights": "random"}
    params["report"] = {
        "units": units or ["layer2:0", "layer1:63"],
        "montage_epochs": 2,
        "thumb_size": 16,
    }
    write_params(folder / "params.yaml", params)
    run_pipeline(folder, *stages_from("data"))


def _panels(png):
    """How many panels a curve figure has, from its width."""
    return round(Image.open(png).size[0] / (PANEL_WIDTH * DPI))


def _references_exist(page):
    html = page.read_text()
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    for reference in references:
        assert reference.startswith("data:image/png;base64,") or (page.parent / reference).is_file(), (
            reference
        )
    return references


@pytest.mark.slow
def test_report_and_comparison_of_both_conditions(project):
    tmp_path = project  # clrjit is trained already; the second run trains here
    _micro_run(tmp_path, "clrjit")
    report = tmp_path / "report"
    for name in (
        "prototypes_layer1.png",
        "prototypes_layer2.png",
        "development.png",
        "probe.png",
        "diversity.png",
        "rate_of_change.png",
        "consistency.png",
        "superstimulus.png",
        "exemplars.png",
        "readability.png",
        "specificity.png",
        "cka.png",
        "index.html",
        "atlas/index.html",
    ):
        assert (report / name).is_file(), name
    # Fig. 1: three extracted channels of 24 px images in a 2 x 2 grid with 2 px gaps.
    assert Image.open(report / "prototypes_layer2.png").size == (2 * 24 + 2, 2 * 24 + 2)
    assert [
        _panels(report / f"{name}.png")
        for name in (
            "probe",
            "diversity",
            "rate_of_change",
            "consistency",
            "superstimulus",
            "readability",
            "specificity",
            "cka",
        )
    ] == [1, 2, 2, 2, 2, 2, 2, 2]  # the readouts in one panel; one panel per layer
    references = _references_exist(report / "index.html")
    # 2 grids + 10 figures
    assert "atlas/index.html" in references and sum(r.startswith("data:") for r in references) == 12
    # The ratio figure's numbers: the index's ratios, per layer and epoch.
    ratios = pd.read_csv(report / "superstimulus.csv")
    index = pd.read_parquet(tmp_path / "out/prototypes/index.parquet")
    assert len(ratios) == 2 * 3 and ratios[(ratios.layer == "layer2") & (ratios.epoch == 2)][
        "median"
    ].item() == pytest.approx(index[(index.layer == "layer2") & (index.epoch == 2)].superstimulus.median())
    manifest = (report / "atlas/runs.js").read_text()
    # All 84 images of train + unlabeled, the top 8 kept
    assert '"exemplars": {"k": 8, "sample": 84' in manifest
    # The page says which unit the prototypes belong to and where its receptive field peaks:
    # at 24 px layer2's 3 x 3 map has a middle unit, layer1's 6 x 6 map does not.
    html = (report / "index.html").read_text()
    assert re.search(
        r"layer2&#x27;s map is 3 x 3 at 24 px; the unit read is \(1, 1\), the map&#x27;s middle\. "
        r"Its receptive field peaks at pixel \(\d+, \d+\) at epoch 2",
        html,
    )
    assert (
        "layer1&#x27;s map is 6 x 6 at 24 px; the unit read is (2, 2), up and left of the map&#x27;s middle"
        in html
    )

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = newest_run(client)
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/index.html", "report/diversity.png", "report/atlas"} <= logged
    assert run.data.tags["protoviz.stage.report"] == "done"

    # A unit that was not extracted is named in one clear error, and the old report stays.
    params = (tmp_path / "params.yaml").read_text().replace("layer1:63", "layer1:62")
    (tmp_path / "params.yaml").write_text(params)
    before = (report / "index.html").read_bytes()
    status, _, stderr = call_stage("report", tmp_path, *REPORT_ARGS)
    assert status == 2 and "report.units: layer1:62 was not extracted" in stderr
    assert (report / "index.html").read_bytes() == before
    (tmp_path / "params.yaml").write_text(params.replace("layer1:62", "layer1:63"))

    # A full disk while writing: one line naming the file, the old report stays, the run ends FAILED.
    def full_disk(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "fsync", full_disk)
        status, _, stderr = call_stage("report", tmp_path, *REPORT_ARGS)
    assert status == 2 and "cannot write it (no space left on the device)" in stderr.strip().splitlines()[-1]
    assert (report / "index.html").read_bytes() == before
    failed = client.get_run(run.info.run_id)
    assert failed.info.status == "FAILED" and failed.data.tags["protoviz.stage.report"] == "failed"
    stale = report / "atlas/runs/clrjit-seed1-0123abcd"
    stale.mkdir()

    # The second run differs in everything a condition is made of: the augmentation, the learner
    # (BYOL, with its momentum teacher) and the backbone (MobileNetV2, not a ResNet, so every
    # stage follows the checkpoint's own layers); compare makes it one condition beside SimCLR.
    mobilenet_layers = ("features.2", "features.4")  # 6 x 6 and 3 x 3 maps at 24 px, like layer1/2
    _micro_run(
        tmp_path, "keepclr", "byol", "mobilenet_v2", mobilenet_layers, ["features.4:0", "features.2:23"]
    )
    other = "byol mobilenet_v2 keepclr"
    mobilenet_report = (tmp_path / "report/index.html").read_text()
    assert "features.4&#x27;s map is 3 x 3 at 24 px" in mobilenet_report
    stdout = run_stage("compare", tmp_path, "--out", "comparison")
    assert "using clrjit seed 1" in stdout and f"using {other} seed 1" in stdout  # it says which runs it used
    comparison = tmp_path / "comparison"
    for name in ("probe.png", "diversity.png", "rate_of_change.png", "consistency.png", "final_probe.csv"):
        assert (comparison / name).is_file(), name
    # Readouts; layers (ResNet18's two and MobileNetV2's two)
    assert _panels(comparison / "probe.png") == 3 and _panels(comparison / "diversity.png") == 4
    assert _panels(comparison / "superstimulus.png") == 4
    # Each condition's one run: its logged median, sem NaN
    ratio = pd.read_csv(comparison / "superstimulus.csv")
    assert ratio[(ratio.condition == "clrjit") & (ratio.layer == "layer2") & (ratio.epoch == 2)][
        "mean"
    ].item() == pytest.approx(ratios[(ratios.layer == "layer2") & (ratios.epoch == 2)]["median"].item())
    final = pd.read_csv(comparison / "final_probe.csv")
    assert set(final.condition) == {"clrjit", other} and set(final.readout) == {
        "logreg",
        "linearsvc",
        "adam",
    }
    assert (final.seeds == 1).all() and final["sem"].isna().all()
    runs = pd.read_csv(comparison / "runs.csv")  # the runs behind every number
    assert sorted(runs.aug) == ["clrjit", "keepclr"]
    assert (
        sorted(runs.method) == ["byol", "simclr"]
        and sorted(runs.backbone) == ["mobilenet_v2", "resnet18"]
        and (runs.seed == 1).all()
    )
    other_probe = pd.read_csv(tmp_path / "plots/probe.csv")  # the workspace now holds the second run
    per_run = pd.read_csv(comparison / "per_run.csv")  # each run's own curves
    other_run = per_run[per_run.condition == other].set_index("epoch")
    assert other_run.logreg.tolist() == pytest.approx(other_probe.logreg.tolist())
    other_loss = pd.read_csv(tmp_path / "plots/train_loss.csv").set_index("epoch").loss
    assert other_run.loss.loc[other_loss.index].tolist() == pytest.approx(other_loss.tolist())
    assert pd.isna(other_run.loss.loc[0]) and set(per_run.name) == set(runs.name)  # no loss before training
    assert final.set_index(["condition", "readout"]).loc[(other, "logreg"), "mean"] == pytest.approx(
        other_probe.logreg.iloc[-1]
    )
    per_epoch = pd.read_csv(comparison / "probe.csv")  # the probe figure's numbers
    last = per_epoch[per_epoch.epoch == per_epoch.epoch.max()].set_index(["condition", "readout"])
    assert last.loc[(other, "logreg"), "mean"] == pytest.approx(other_probe.logreg.iloc[-1])
    assert sorted(per_epoch.epoch.unique()) == sorted(other_probe.epoch)
    diversity = pd.read_csv(comparison / "diversity.csv")
    assert set(diversity.condition) == {"clrjit", other} and set(diversity.layer) == {
        "layer1",
        "layer2",
        *mobilenet_layers,
    }
    page = comparison / "index.html"
    assert "atlas/index.html" in _references_exist(page)
    runs_js = (comparison / "atlas/runs.js").read_text()
    assert '"aug": "clrjit"' in runs_js and '"aug": "keepclr"' in runs_js
    assert len(list((comparison / "atlas/runs").glob("*/manifest.json"))) == 2
    assert not stale.exists()  # the second run's report removed the atlas folders of other configurations
    # Each run part links its units to the other run's (layers of other names have no matches) and
    # to the units of either run that respond most alike, from the similarity stage's artifacts.
    assert "the atlas links each unit to its matches in 1 other runs" in stdout
    links = sorted((comparison / "atlas/runs").glob("*/links/*.js"))
    assert sorted(p.stem for p in links) == sorted(["layer1", "layer2", *mobilenet_layers])
    layer2 = next(p for p in links if p.stem == "layer2").read_text()
    payload = json.loads(layer2.splitlines()[1].split(" = ", 1)[1].rstrip(";"))
    (other_name,) = payload["matches"]
    assert all(values is None for values in payload["matches"][other_name]["best"])
    assert payload["nearest"]["epoch"] == 2 and all(len(units) == 6 for units in payload["nearest"]["units"])
