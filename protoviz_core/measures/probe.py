"""Linear probes: how linearly separable are the classes in a frozen backbone's features?

Paper Sec. 2.2 and 6.1 (Fig. 4): the backbone is frozen, the labelled train and
test images are mapped to its 512-d features with no augmentation (normalisation
only), and three linear readouts are fitted on the train features and scored on
the test features: sklearn's LogisticRegression, sklearn's LinearSVC, and a linear
layer trained with Adam on cross-entropy. Features are standardised with the
train split's statistics only.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from torch import nn

from protoviz_core.infra.work import WorkItem, identity
from protoviz_core.models.features import extract_features
from protoviz_core.pipeline.config import ProbeParams
from protoviz_core.training.checkpoints import checkpoint_identity, load_backbone


def standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero mean, unit variance per feature, with the train split's statistics only."""
    mean = train.mean(axis=0)
    std = train.std(axis=0) + 1e-6  # dead features (constant 0 after ReLU) stay finite
    return (train - mean) / std, (test - mean) / std


def _adam_linear(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, s: ProbeParams
) -> float:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.as_tensor(train_x, dtype=torch.float32), torch.as_tensor(train_y, dtype=torch.int64)
    classes = int(max(train_y.max(), test_y.max())) + 1
    torch.manual_seed(0)
    layer = nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.Adam(layer.parameters(), lr=s.adam_lr, weight_decay=s.adam_weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(s.adam_epochs):
        for batch in torch.randperm(len(x), generator=generator).split(s.adam_batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(layer(x[batch]), y[batch]).backward()
            optimizer.step()
    with torch.no_grad():
        predicted = layer(torch.as_tensor(test_x, dtype=torch.float32)).argmax(dim=1).numpy()
    return float((predicted == test_y).mean())


def probe_accuracies(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    settings: ProbeParams,
) -> dict[str, float]:
    """Test accuracy (0..1) of each readout in :data:`READOUTS` fitted on the train split.

    Args:
        train_features, test_features: float (N, D) and (M, D).
        train_labels, test_labels: int (N,) and (M,), classes 0..K-1.
        settings: the ``probe`` section of params.yaml (readout hyperparameters).
    """
    train_x, test_x = standardise(
        np.asarray(train_features, np.float64), np.asarray(test_features, np.float64)
    )
    with warnings.catch_warnings():
        # A probe that has not fully converged still gives a usable accuracy; its
        # iteration budget is a param.
        warnings.simplefilter("ignore", ConvergenceWarning)
        logreg = LogisticRegression(
            C=settings.logreg_c, max_iter=settings.logreg_max_iter, solver=settings.logreg_solver
        )
        svc = LinearSVC(C=settings.svc_c, max_iter=settings.svc_max_iter, dual="auto", random_state=0)
        return {
            "logreg": float(logreg.fit(train_x, train_labels).score(test_x, test_labels)),
            "linearsvc": float(svc.fit(train_x, train_labels).score(test_x, test_labels)),
            "adam": _adam_linear(train_x, train_labels, test_x, test_labels, settings),
        }


# Bump when a change alters the features for the same checkpoint and images: it keys every result.
FEATURES_VERSION = 1


def feature_work(
    checkpoints: dict[int, Path],
    splits: dict[str, np.ndarray],
    data_key: str,
    *,
    batch_size: int,
    device: torch.device,
) -> list[WorkItem]:
    """One work item per checkpoint: its features (N, D) of each split, ``{split: tensor}``.

    The identity is the checkpoint's, ``data_key`` (which images) and the split names,
    so changing only the readouts reuses the features and a new checkpoint or data set
    recomputes them.
    """
    items = []
    for path in checkpoints.values():

        def compute(path=path) -> dict[str, torch.Tensor]:
            backbone, meta = load_backbone(path)
            return {
                name: extract_features(
                    backbone, images, meta["normalize"], batch_size=batch_size, device=device
                )
                for name, images in splits.items()
            }

        key = identity(
            "probe features", checkpoint_identity(path), data_key, sorted(splits), FEATURES_VERSION
        )
        items.append(WorkItem(Path(path).name, key, compute))
    return items
