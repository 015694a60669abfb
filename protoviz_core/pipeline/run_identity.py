"""What names a pipeline run in MLflow: the experiment, the run's name and its tags.

A pipeline run is one configuration (all of params.yaml) in one DVC experiment; its tags
(``protoviz.params_hash`` and ``protoviz.dvc_exp``) find it again, the others describe it
(:func:`run_tags`). Opening and closing runs is :mod:`protoviz_core.pipeline.tracking`'s.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from protoviz_core.models.backbones import BACKBONE_ARCH
from protoviz_core.models.learners import PAPER_METHOD
from protoviz_core.pipeline.config import Params
from protoviz_core.pipeline.mlflow_store import TAG_PREFIX, repository_root

EMBED_WEIGHTS_TAG = (
    f"{TAG_PREFIX}embed_weights"  # the embed stage's weights: random ones must not pass as real
)


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_name(params: Params) -> str:
    """A pipeline run's label, in MLflow and on its report: unique per configuration and the
    same on every machine, e.g. ``clrjit-seed1-1a2b3c4d`` (SimCLR), ``byol-clrjit-seed1-5e6f7a8b``,
    ``byol-resnet50-clrjit-seed1-9c0d1e2f``."""
    learner = "".join(
        f"{value}-"
        for value, paper in ((params.train.method, PAPER_METHOD), (params.train.backbone, BACKBONE_ARCH))
        if value != paper
    )
    return f"{learner}{params.aug}-seed{params.seed}-{params.measurement_hash()[:8]}"


def run_tags(params: Params) -> dict[str, str]:
    """The tags that identify and describe the pipeline run of ``params``."""
    return {
        f"{TAG_PREFIX}params_hash": params.measurement_hash(),
        f"{TAG_PREFIX}dvc_exp": os.environ.get("DVC_EXP_NAME") or "workspace",
        f"{TAG_PREFIX}training_hash": params.training_identity(),
        f"{TAG_PREFIX}aug": params.aug,
        f"{TAG_PREFIX}method": params.train.method,
        f"{TAG_PREFIX}backbone": params.train.backbone,
        f"{TAG_PREFIX}seed": str(params.seed),
        f"{TAG_PREFIX}git_commit": _git_commit(repository_root()),
    }


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.06}}`` -> ``{"train.lr": 0.06}``."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
