"""Shared fixtures: tiny configurations that run in seconds on a CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from protoviz_core.config import TrainParams
from protoviz_core.synthetic import generate_images

from tests.helpers import TINY_IMAGE_SIZE


@pytest.fixture(autouse=True)
def _isolated_tracking(tmp_path, monkeypatch):
    """Every test gets its own MLflow database and no DVC experiment context."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    torch.set_num_threads(2)


@pytest.fixture
def tiny_images() -> np.ndarray:
    """uint8 (64, 3, 24, 24) synthetic images."""
    rng = np.random.default_rng(0)
    return generate_images(rng.integers(0, 10, 64), TINY_IMAGE_SIZE, rng)


@pytest.fixture
def tiny_train() -> TrainParams:
    return TrainParams(epochs=2, batch_size=32, num_workers=0, device="cpu")


@pytest.fixture(scope="session")
def published_torch_home(tmp_path_factory):
    """A TORCH_HOME whose hub cache holds all ten embedding networks' files in their published format."""
    from tests.published_weights import write_published_imagenet

    home = tmp_path_factory.mktemp("torch_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(home))
        write_published_imagenet()
    return home
