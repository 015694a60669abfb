"""bench/ops/gpu_check.py, the one-command GPU check, in its CPU form: it must not rot between GPU runs."""

import re
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_the_cpu_and_prints_its_table():
    result = subprocess.run(
        [sys.executable, "-m", "bench.ops.gpu_check", "--device", "cpu", "--tiny"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split("|")[1].split(":")[0].strip() for row in rows] == ["extraction", "train", "distance"]
    assert re.search(r"\| [\d.]+ prototypes/s \([\d.]+ s\)", rows[0])
    assert re.search(r"\| [\d.]+ images/s; an STL10 epoch", rows[1])
    assert re.search(r"\| [\d.]+ s per epoch", rows[2])


def test_gpu_check_runs_its_gpu_branches_on_a_fake_gpu_and_reports_the_peak_of_every_shard(
    monkeypatch, capsys
):
    """The GPU form, on the suite's fake CUDA device: rows print as they are measured, and the
    memory row is the highest of the shards' peaks, not the last shard's alone."""
    from bench.ops import gpu_check
    from tests.fake_cuda import fake_cuda

    peaks = []
    shard = gpu_check.make_shard

    def measured_shard(*args, **kwargs):
        contents = shard(*args, **kwargs)
        peaks.append(torch.cuda.max_memory_allocated())
        return contents

    monkeypatch.setattr(gpu_check, "make_shard", measured_shard)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--tiny"])
    with fake_cuda(
        free_bytes=2**30, reduced_precision=False
    ) as gpu:  # (precision: tests/engine/test_synthesis.py)
        gpu_check.main()
    output = capsys.readouterr().out
    assert "fake CUDA (CPU)" in output
    rows = [line for line in output.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 3 and gpu.memory.resets >= 2 * len(peaks)  # the check's resets and the engine's
    assert f"peak GPU memory {gpu_check.size(max(peaks))} of 1.0 GiB free" in rows[0]
