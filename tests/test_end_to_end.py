"""The pipeline as DVC runs it, on a fresh clone: ``dvc repro``, then what a researcher looks at.

It clones the committed repository (uncommitted changes are not in the clone), writes
tiny params, runs ``dvc repro`` with this environment's DVC (every stage as a separate
process, exactly as dvc.yaml says), then checks dvc.lock, the metrics, the report and
its atlas, and the MLflow run; pushes the run to the default remote and pulls it
back byte for byte, then does the same through S3 (moto's server) into a fresh clone;
edits library files and checks that ``dvc status`` reruns exactly the stages that
import them; and makes params faults (a typo, a failing value). The demo's own params
are run by the README's first command (``make demo``); its time is measured there.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import PIPELINE, s3_server, tiny_extract, tiny_params, write_params
from tests.test_dvc_deps import code_closure

REPO = Path(__file__).resolve().parents[1]
STAGES = list(PIPELINE)
DVC = str(Path(sys.executable).parent / "dvc")


def _params() -> dict:
    params = tiny_params(epochs=2)
    params["probe"] = {"adam_epochs": 5, "device": "cpu"}
    params["rfmask"] = {"layers": ["layer1", "layer4"], "samples": 2, "channels_per_layer": 2}
    params["extract"] = tiny_extract(epochs="all", layers=["layer1", "layer4"], generator="fourier")
    params["decoder"] = {"device": "cpu"}  # trains nothing with the fourier prior
    params["exemplars"] = {"images": 50, "top_k": 4, "device": "cpu"}
    params["embed"] = {"nets": [], "weights": "random"}
    params["distance"] = {
        "space": "pixel",
        "metric": "mse",
        "masked": True,
    }  # DVC wants every section it tracks
    params["read_unit"] = "top_left"
    params["readability"] = {"device": "cpu"}
    params["similarity"] = {"images": 20, "device": "cpu"}
    params["report"] = {"units_per_layer": 1, "montage_epochs": 1, "thumb_size": 16}
    return params


def _digests(*folders) -> dict[str, str]:
    return {
        str(p): hashlib.md5(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".gitignore"
    }


def _changed_stages(clone) -> set[str]:
    status = subprocess.run([DVC, "status", "--json"], cwd=clone, capture_output=True, text=True, check=True)
    return set(json.loads(status.stdout or "{}"))


def _use_s3(repo, endpoint):
    """Give ``repo`` the remote "s3" (bucket protoviz on ``endpoint``), all in
    .dvc/config.local, which git ignores."""
    for command in (
        ["add", "--local", "s3", "s3://protoviz/runs"],
        ["modify", "--local", "s3", "endpointurl", endpoint],
        ["modify", "--local", "s3", "access_key_id", "testing"],
        ["modify", "--local", "s3", "secret_access_key", "testing"],
    ):
        subprocess.run([DVC, "remote", *command], cwd=repo, check=True, capture_output=True)


@pytest.mark.slow
def test_dvc_repro_on_a_fresh_clone_and_code_changes_rerun_exactly_their_stages(tmp_path, monkeypatch):
    clone = tmp_path / "protoviz"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    params = _params()
    write_params(clone / "params.yaml", params)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the stages use the clone's mlflow.db, as in a real run
    monkeypatch.setenv("PATH", f"{Path(DVC).parent}{os.pathsep}{os.environ['PATH']}")  # as after make setup
    result = subprocess.run([DVC, "repro"], cwd=clone, capture_output=True, text=True, timeout=15 * 60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    assert set(STAGES) <= set(lock["stages"])
    assert _changed_stages(clone) == set()
    epochs, layers = params["train"]["epochs"], params["extract"]["layers"]
    train = json.loads((clone / "metrics/train.json").read_text())
    probe = json.loads((clone / "metrics/probe.json").read_text())
    distance = json.loads((clone / "metrics/distance.json").read_text())
    extract = json.loads((clone / "metrics/extract.json").read_text())
    assert train["epochs"] == epochs and train["checkpoints"] == epochs + 1 and 0 < train["final_loss"] < 10
    assert probe["epoch"] == epochs and all(0 <= probe[r] <= 1 for r in ("logreg", "linearsvc", "adam"))
    assert distance["epoch"] == epochs and all(distance[layer]["diversity"] > 0 for layer in layers)
    assert all(0 <= extract[layer]["dead_fraction"] < 1 for layer in layers)
    assert extract["layer1"]["superstimulus_median"] > 0  # the ratio to the exemplars' best

    report = clone / "report"
    html = (report / "index.html").read_text()
    for reference in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert reference.startswith("data:image/png") or (report / reference).is_file(), reference
    runs_js = (report / "atlas/runs.js").read_text()
    assert len(re.findall(r'"sprites/', runs_js)) == (epochs + 1) * len(layers) * params["extract"]["repeats"]

    with sqlite3.connect(clone / "mlflow.db") as db:
        (run_id,) = [row[0] for row in db.execute("select run_uuid from runs")]
        tags = dict(db.execute("select key, value from tags where run_uuid = ?", (run_id,)))
        steps = [
            row[0]
            for row in db.execute(
                "select step from metrics where run_uuid = ? and key = 'probe/logreg' order by step",
                (run_id,),
            )
        ]
    assert all(
        tags[f"protoviz.stage.{stage}"] == "done"
        for stage in STAGES
        if stage not in ("params", "data", "spectrum", "decoder")  # data-derived, no MLflow run
    )
    assert steps == list(range(epochs + 1))
    assert list((clone / "mlartifacts").rglob("report/index.html"))

    # Stopping dvc repro during extract, by SIGTERM to its process group (a terminal's kill,
    # `dvc queue kill`) and by SIGKILL, then running it again: the same store, byte for byte,
    # and the stopped runs' MLflow stage tags end as done.
    store = clone / "out/prototypes"
    finished = _digests(store)
    for stop in (signal.SIGTERM, signal.SIGKILL):
        shutil.rmtree(store)
        repro = subprocess.Popen(
            [DVC, "repro", "extract"],
            cwd=clone,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        deadline = time.time() + 5 * 60
        while not list((store / "shards").glob("*.pt")):
            assert repro.poll() is None and time.time() < deadline, "extract ended before the stop"
            time.sleep(0.05)
        os.killpg(repro.pid, stop)
        stdout, stderr = repro.communicate(timeout=120)
        assert repro.returncode != 0 and len(_digests(store)) < len(finished)
        if stop == signal.SIGTERM:
            assert "terminated (SIGTERM); finished work is kept" in stdout + stderr
            assert "Traceback" not in stdout + stderr
    rerun = subprocess.run([DVC, "repro"], cwd=clone, capture_output=True, text=True, timeout=10 * 60)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert _digests(store) == finished and _changed_stages(clone) == set()
    with sqlite3.connect(clone / "mlflow.db") as db:
        assert dict(db.execute("select key, value from tags where key = 'protoviz.stage.extract'")) == {
            "protoviz.stage.extract": "done"
        }

    # A finished run survives a round trip through the default remote (checkpoints, prototypes, data).
    outputs = [clone / "data", clone / "out/checkpoints", clone / "out/prototypes", clone / "out/rfmasks"]
    before = _digests(*outputs)
    assert len(before) >= 3 + 3 + 2 * 3 * 2
    subprocess.run([DVC, "push", "-q"], cwd=clone, check=True, capture_output=True)
    for folder in [*outputs, clone / ".dvc/cache"]:
        shutil.rmtree(folder)
    subprocess.run([DVC, "pull", "-q"], cwd=clone, check=True, capture_output=True)
    assert _digests(*outputs) == before

    # The same through a real S3 API (moto's server on 127.0.0.1): push, a fresh clone, pull.
    subprocess.run(["git", "add", "-A"], cwd=clone, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"], cwd=clone, check=True
    )
    with s3_server() as endpoint:
        _use_s3(clone, endpoint)
        subprocess.run([DVC, "push", "-q", "-r", "s3"], cwd=clone, check=True, capture_output=True)
        fresh = tmp_path / "fresh"
        subprocess.run(["git", "clone", "-q", str(clone), str(fresh)], check=True)
        _use_s3(fresh, endpoint)
        subprocess.run([DVC, "pull", "-q", "-r", "s3"], cwd=fresh, check=True, capture_output=True)
    assert _digests(*[fresh / p.relative_to(clone) for p in outputs]) == {
        str(fresh / Path(k).relative_to(clone)): v for k, v in before.items()
    }
    # Credentials stay out of git
    assert (
        "testing"
        not in subprocess.run(
            ["git", "show", "HEAD:.dvc/config"], cwd=fresh, capture_output=True, text=True, check=True
        ).stdout
    )

    # A remote's bad bytes never pass: a shard's object in the default remote overwritten with
    # another shard's bytes is refused by dvc pull in a fresh clone (the remote's verify = true in
    # .dvc/config), and the bad bytes never reach that clone's workspace.
    shard, other = sorted((clone / "out/prototypes/shards").iterdir())[:2]
    digest = before[str(shard)]
    damaged = clone / "dvc-storage/files/md5" / digest[:2] / digest[2:]
    damaged.chmod(0o644)
    damaged.write_bytes(other.read_bytes())
    bad = tmp_path / "bad"
    subprocess.run(["git", "clone", "-q", str(clone), str(bad)], check=True)
    subprocess.run(
        [DVC, "remote", "modify", "--local", "local", "url", str(clone / "dvc-storage")], cwd=bad, check=True
    )
    pulled = subprocess.run([DVC, "pull", "-r", "local"], cwd=bad, capture_output=True, text=True)
    assert pulled.returncode != 0 and "out/prototypes" in pulled.stdout + pulled.stderr
    arrived = bad / shard.relative_to(clone)
    assert not arrived.exists() or hashlib.md5(arrived.read_bytes()).hexdigest() == digest

    # A library file's change reruns exactly the stages that import it (extract, embed, readability, report).
    library_file = "protoviz_core/prototypes/store.py"
    (clone / library_file).write_text((clone / library_file).read_text() + "\n# edited\n")
    importers = {stage for stage in STAGES if library_file in code_closure(f"stages/{stage}.py")}
    assert importers == {"extract", "embed", "readability", "report"}
    assert _changed_stages(clone) == importers

    # A typo in a key no other stage depends on stops dvc repro with one line naming it.
    valid = (clone / "params.yaml").read_text()
    (clone / "params.yaml").write_text(valid + "sed: 2\n")
    result = subprocess.run([DVC, "repro"], cwd=clone, capture_output=True, text=True, timeout=5 * 60)
    assert result.returncode != 0
    assert (
        "error: params.yaml: sed: unknown key; allowed keys here: aug, data," in result.stdout + result.stderr
    )

    # A stage that fails on a bad value keeps the metrics and plots of the last good run.
    subprocess.run(["git", "checkout", "-q", library_file], cwd=clone, check=True)
    kept = {name: (clone / name).read_bytes() for name in ("metrics/train.json", "plots/train_loss.csv")}
    params["train"]["lr"] = 1e12  # valid for the schema; SGD diverges at once
    write_params(clone / "params.yaml", params)
    result = subprocess.run(
        [DVC, "repro", "train"], cwd=clone, capture_output=True, text=True, timeout=5 * 60
    )
    assert result.returncode != 0
    assert "error: train: the loss is nan at epoch 1, step 2; training diverged" in result.stderr
    assert {name: (clone / name).read_bytes() for name in kept} == kept


@pytest.mark.slow
def test_two_queued_experiments_run_side_by_side_and_both_runs_hold_every_metric(tmp_path, monkeypatch):
    """`dvc exp run --queue` twice (two seeds), then `dvc queue start -j 2` on this CPU machine:
    both finish, and the one mlflow.db at the repository's root holds both runs, each with every
    stage done and the same metric keys, every epoch's probe among them."""
    clone = tmp_path / "protoviz"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    params = _params()
    write_params(clone / "params.yaml", params)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.setenv("PATH", f"{Path(DVC).parent}{os.pathsep}{os.environ['PATH']}")
    for seed in (1, 2):
        subprocess.run(
            [DVC, "exp", "run", "--queue", "-n", f"seed{seed}", "-S", f"seed={seed}"],
            cwd=clone,
            check=True,
            capture_output=True,
            timeout=120,
        )
    # The workers are daemons that keep the output they inherit open: not captured, or this
    # call would wait for them to exit.
    subprocess.run(
        [DVC, "queue", "start", "-j", "2"],
        cwd=clone,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    try:
        deadline = time.time() + 15 * 60
        while True:
            status = subprocess.run(
                [DVC, "queue", "status"], cwd=clone, capture_output=True, text=True, timeout=120
            ).stdout
            if not re.search(r"\b(Queued|Running)\b", status):
                break
            assert time.time() < deadline, status
            time.sleep(2)
        logs = {
            name: subprocess.run(
                [DVC, "queue", "logs", name], cwd=clone, capture_output=True, text=True, timeout=120
            ).stdout
            for name in ("seed1", "seed2")
        }
    finally:  # no worker outlives the test, idle or not
        subprocess.run(
            [DVC, "queue", "stop", "--kill"],
            cwd=clone,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )
    assert status.count("Success") == 2, status + "".join(text[-2000:] for text in logs.values())

    with sqlite3.connect(clone / "mlflow.db") as db:
        runs = dict(db.execute("select run_uuid, status from runs"))
        experiments = {
            run: dict(db.execute("select key, value from tags where run_uuid = ?", (run,))) for run in runs
        }
        metric_keys = {
            run: {row[0] for row in db.execute("select key from metrics where run_uuid = ?", (run,))}
            for run in runs
        }
        probe_steps = {
            run: sorted(
                row[0]
                for row in db.execute(
                    "select step from metrics where run_uuid = ? and key = 'probe/logreg'", (run,)
                )
            )
            for run in runs
        }
    assert sorted(tags["protoviz.dvc_exp"] for tags in experiments.values()) == ["seed1", "seed2"]
    assert set(runs.values()) == {"FINISHED"}
    for tags in experiments.values():
        assert all(
            tags[f"protoviz.stage.{stage}"] == "done"
            for stage in STAGES
            if stage not in ("params", "data", "spectrum", "decoder")  # data-derived, no MLflow run
        )
    first, second = metric_keys.values()
    assert first == second and {"train/loss", "probe/logreg", "extract/activation/layer1"} <= first
    assert all(steps == list(range(params["train"]["epochs"] + 1)) for steps in probe_steps.values())
