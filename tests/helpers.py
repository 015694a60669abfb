"""Tiny configurations that run in seconds on a CPU."""

from __future__ import annotations

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
