"""The README's first command, exactly as written, on a fresh clone: the whole demo pipeline.

It clones the committed repository (uncommitted changes are not in the clone), runs
the command with bash (setup of a new virtual environment included), then checks
what a researcher looks at: dvc.lock, metrics, the report and its atlas, and the
MLflow run. The wall time is printed; the README records it.
"""

import json
import os
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = ["data", "train", "probe", "rfmask", "extract", "embed", "distance", "report"]


def readme_first_command() -> str:
    """The first line of the README's first bash block (the setup-and-run command)."""
    block = re.search(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    return block.splitlines()[0]


def _clean_environment() -> dict:
    """This process's environment minus what the tests or a DVC run set (as on a fresh shell)."""
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("MLFLOW_", "DVC_", "VIRTUAL_ENV", "PYTEST"))}
    venv_bin = str(Path(os.sys.executable).parent)
    environment["PATH"] = os.pathsep.join(p for p in environment["PATH"].split(os.pathsep) if p != venv_bin)
    return environment


@pytest.mark.slow
def test_readme_first_command_runs_the_demo_on_a_fresh_clone(tmp_path):
    command = readme_first_command()
    assert command.startswith("make demo")
    clone = tmp_path / "protoviz"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    started = time.monotonic()
    result = subprocess.run(["bash", "-c", command], cwd=clone, env=_clean_environment(),
                            capture_output=True, text=True, timeout=40 * 60)
    minutes = (time.monotonic() - started) / 60
    print(f"README first command on a fresh clone: {minutes:.1f} min")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    assert set(STAGES) <= set(lock["stages"])
    status = subprocess.run([str(clone / ".venv/bin/dvc"), "status"], cwd=clone, capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout + status.stderr

    params = yaml.safe_load((clone / "params.yaml").read_text())
    epochs = params["train"]["epochs"]
    train = json.loads((clone / "metrics/train.json").read_text())
    probe = json.loads((clone / "metrics/probe.json").read_text())
    distance = json.loads((clone / "metrics/distance.json").read_text())
    extract = json.loads((clone / "metrics/extract.json").read_text())
    assert train["epochs"] == epochs and train["checkpoints"] == epochs + 1
    assert 0 < train["final_loss"] < 10
    assert probe["epoch"] == epochs and all(0.1 <= probe[r] <= 1 for r in ("logreg", "linearsvc", "adam"))
    assert distance["epoch"] == epochs and all(distance[layer]["diversity"] > 0 for layer in params["extract"]["layers"])
    assert all(0 <= extract[layer]["dead_fraction"] < 1 for layer in params["extract"]["layers"])

    report = clone / "report"
    html = (report / "index.html").read_text()
    for reference in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert reference.startswith("data:image/png") or (report / reference).is_file(), reference
    for figure in ("development.png", "probe.png", "diversity.png", "rate_of_change.png", "consistency.png"):
        assert (report / figure).stat().st_size > 10_000, figure
    runs_js = (report / "atlas/runs.js").read_text()
    assert len(re.findall(r'"sprites/', runs_js)) == (epochs + 1) * len(params["extract"]["layers"]) * \
        params["extract"]["repeats"]

    with sqlite3.connect(clone / "mlflow.db") as db:
        (run_id,) = [row[0] for row in db.execute("select run_uuid from runs")]
        tags = dict(db.execute("select key, value from tags where run_uuid = ?", (run_id,)))
        steps = [row[0] for row in db.execute(
            "select step from metrics where run_uuid = ? and key = 'probe/logreg' order by step", (run_id,))]
    assert all(tags[f"protoviz.stage.{stage}"] == "done" for stage in STAGES if stage != "data")
    assert steps == list(range(epochs + 1))
    assert (clone / "mlartifacts").is_dir() and list((clone / "mlartifacts").rglob("report/index.html"))
