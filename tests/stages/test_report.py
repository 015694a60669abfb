"""report and compare on micro runs of both conditions: files, panels, links, MLflow artifacts."""

import errno
import os
import re

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from protoviz_core.figures import DPI, PANEL_WIDTH
from tests.helpers import (
    STAGE_ARGS,
    call_stage,
    newest_run,
    run_pipeline,
    run_stage,
    tiny_extract,
    tiny_params,
    write_params,
)

REPORT_ARGS = STAGE_ARGS["report"]


def _micro_run(folder, aug):
    """Every stage of the pipeline, as dvc.yaml runs them, at the smallest useful size."""
    params = tiny_params(epochs=2)
    params["aug"] = aug
    params["probe"] = {"adam_epochs": 2, "device": "cpu"}
    params["extract"] = tiny_extract()
    params["rfmask"] = {"layers": ["layer1", "layer2"], "samples": 2, "channels_per_layer": 2}
    params["embed"] = {"nets": [], "weights": "random"}
    params["report"] = {"units": ["layer2:0", "layer1:63"], "montage_epochs": 2, "thumb_size": 16}
    write_params(folder / "params.yaml", params)
    run_pipeline(
        folder, "data", "train", "probe", "rfmask", "exemplars", "extract", "embed", "distance", "report"
    )


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
    tmp_path = project  # clrjit is trained already; keepclr trains here
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
        "index.html",
        "atlas/index.html",
    ):
        assert (report / name).is_file(), name
    # Fig. 1: three extracted channels of 24 px images in a 2 x 2 grid with 2 px gaps.
    assert Image.open(report / "prototypes_layer2.png").size == (2 * 24 + 2, 2 * 24 + 2)
    assert [
        _panels(report / f"{name}.png")
        for name in ("probe", "diversity", "rate_of_change", "consistency", "superstimulus")
    ] == [1, 2, 2, 2, 2]  # the readouts in one panel; one panel per layer
    references = _references_exist(report / "index.html")
    # 2 grids + 7 figures
    assert "atlas/index.html" in references and sum(r.startswith("data:") for r in references) == 9
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

    _micro_run(tmp_path, "keepclr")
    stdout = run_stage("compare", tmp_path, "--out", "comparison")
    assert "using clrjit seed 1" in stdout and "using keepclr seed 1" in stdout  # it says which runs it used
    comparison = tmp_path / "comparison"
    for name in ("probe.png", "diversity.png", "rate_of_change.png", "consistency.png", "final_probe.csv"):
        assert (comparison / name).is_file(), name
    # Readouts; layers
    assert _panels(comparison / "probe.png") == 3 and _panels(comparison / "diversity.png") == 2
    assert _panels(comparison / "superstimulus.png") == 2
    # Each condition's one run: its logged median, sem NaN
    ratio = pd.read_csv(comparison / "superstimulus.csv")
    assert ratio[(ratio.condition == "clrjit") & (ratio.layer == "layer2") & (ratio.epoch == 2)][
        "mean"
    ].item() == pytest.approx(ratios[(ratios.layer == "layer2") & (ratios.epoch == 2)]["median"].item())
    final = pd.read_csv(comparison / "final_probe.csv")
    assert set(final.condition) == {"clrjit", "keepclr"} and set(final.readout) == {
        "logreg",
        "linearsvc",
        "adam",
    }
    assert (final.seeds == 1).all() and final["sem"].isna().all()
    runs = pd.read_csv(comparison / "runs.csv")  # the runs behind every number
    assert sorted(runs.aug) == ["clrjit", "keepclr"] and (runs.seed == 1).all()
    keepclr_probe = pd.read_csv(tmp_path / "plots/probe.csv")  # the workspace now holds the keepclr run
    per_run = pd.read_csv(comparison / "per_run.csv")  # each run's own curves
    keepclr_run = per_run[per_run.condition == "keepclr"].set_index("epoch")
    assert keepclr_run.logreg.tolist() == pytest.approx(keepclr_probe.logreg.tolist())
    keepclr_loss = pd.read_csv(tmp_path / "plots/train_loss.csv").set_index("epoch").loss
    assert keepclr_run.loss.loc[keepclr_loss.index].tolist() == pytest.approx(keepclr_loss.tolist())
    assert pd.isna(keepclr_run.loss.loc[0]) and set(per_run.name) == set(runs.name)  # no loss before training
    assert final.set_index(["condition", "readout"]).loc[("keepclr", "logreg"), "mean"] == pytest.approx(
        keepclr_probe.logreg.iloc[-1]
    )
    per_epoch = pd.read_csv(comparison / "probe.csv")  # the probe figure's numbers
    last = per_epoch[per_epoch.epoch == per_epoch.epoch.max()].set_index(["condition", "readout"])
    assert last.loc[("keepclr", "logreg"), "mean"] == pytest.approx(keepclr_probe.logreg.iloc[-1])
    assert sorted(per_epoch.epoch.unique()) == sorted(keepclr_probe.epoch)
    diversity = pd.read_csv(comparison / "diversity.csv")
    assert set(diversity.condition) == {"clrjit", "keepclr"} and set(diversity.layer) == {"layer1", "layer2"}
    page = comparison / "index.html"
    assert "atlas/index.html" in _references_exist(page)
    runs_js = (comparison / "atlas/runs.js").read_text()
    assert '"aug": "clrjit"' in runs_js and '"aug": "keepclr"' in runs_js
    assert len(list((comparison / "atlas/runs").glob("*/manifest.json"))) == 2
    assert not stale.exists()  # the keepclr report removed the atlas folders of other configurations
