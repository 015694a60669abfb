"""Shared fixtures: tiny configurations that run in seconds on a CPU."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from protoviz_core.data.synthetic import generate_images
from protoviz_core.pipeline.config import TrainParams
from protoviz_core.training.checkpoints import list_checkpoints
from tests.helpers import TINY_IMAGE_SIZE, run_pipeline, tiny_params, write_params


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


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory) -> Path:
    """A project folder after the data and train stages of ``tiny_params(epochs=2)``: the suite's
    one trained run. Read it, never write to it: :func:`project` gives each test its own copy."""
    folder = tmp_path_factory.mktemp("trained")
    write_params(folder / "params.yaml", tiny_params(epochs=2))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        run_pipeline(folder, "data", "train")
    return folder


@pytest.fixture
def project(trained_project, tmp_path) -> Path:
    """``tmp_path`` holding a copy of the trained run: data, checkpoints, params, and its MLflow
    database (the train stage's run) where this test's MLFLOW_TRACKING_URI points."""
    shutil.copytree(trained_project, tmp_path, dirs_exist_ok=True)
    return tmp_path


@pytest.fixture(scope="session")
def trained_checkpoints(trained_project) -> dict[int, Path]:
    """{epoch: path} of the trained run's checkpoints (epochs 0, 1, 2); read only."""
    return list_checkpoints(trained_project / "out" / "checkpoints")


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    """Headless Debian Chromium through ChromeDriver (installed by `make test`'s setup)."""
    assert CHROMIUM and CHROMEDRIVER, (
        "chromium/chromedriver not found: `make test` installs Debian's chromium "
        "and chromium-driver packages (apt-get)"
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="protoviz-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
