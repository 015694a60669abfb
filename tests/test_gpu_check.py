"""bench/gpu_check.py, the one-command GPU check, in its CPU form: it must not rot between GPU runs."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_the_cpu_and_prints_its_table():
    result = subprocess.run([sys.executable, "bench/gpu_check.py", "--device", "cpu", "--tiny"], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split("|")[1].split(":")[0].strip() for row in rows] == ["extraction", "train", "distance"]
    assert re.search(r"\| [\d.]+ prototypes/s \([\d.]+ s\)", rows[0])
    assert re.search(r"\| [\d.]+ images/s; an STL10 epoch", rows[1])
    assert re.search(r"\| [\d.]+ s per epoch", rows[2])
