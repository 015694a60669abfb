"""Tiny configurations that run in seconds on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

TINY_IMAGE_SIZE = 24


def tiny_params(**train_overrides) -> dict:
    """A params.yaml mapping for a whole pipeline run in seconds."""
    train = {"epochs": 2, "batch_size": 32, "num_workers": 0, "device": "cpu", **train_overrides}
    return {
        "aug": "clrjit",
        "seed": 1,
        "data": {
            "name": "synthetic",
            "image_size": TINY_IMAGE_SIZE,
            "synthetic": {"n_unlabeled": 64, "n_train": 20, "n_test": 20, "seed": 0},
        },
        "train": train,
    }


def write_params(path, params: dict) -> None:
    path.write_text(yaml.safe_dump(params))


def start_stage(name: str, cwd, *args) -> subprocess.Popen:
    """``python -m stages.<name> ARGS`` in ``cwd``, as DVC runs it (a separate process)."""
    command = [sys.executable, "-m", f"stages.{name}", *args]
    return subprocess.Popen(
        command, cwd=cwd, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run_stage(name: str, cwd, *args, timeout: float = 300) -> str:
    """Run a stage to completion; fail the test with its stderr if it fails. Returns stdout."""
    process = start_stage(name, cwd, *args)
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stderr
    return stdout
