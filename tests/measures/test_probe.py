import numpy as np

from protoviz_core.measures.probe import probe_accuracies, standardise
from protoviz_core.pipeline.config import ProbeParams

FAST = ProbeParams(adam_epochs=60, adam_lr=0.01)


def _blobs(n_per_class=40, classes=4, dim=16, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(classes, dim))
    labels = np.repeat(np.arange(classes), n_per_class)
    return centres[labels] + rng.normal(0, spread, size=(len(labels), dim)), labels


def test_separable_classes_score_near_100_percent_with_every_readout():
    train_x, train_y = _blobs(seed=0)
    test_x, test_y = _blobs(seed=0, n_per_class=20)
    test_x = test_x + np.random.default_rng(1).normal(0, 0.1, test_x.shape)
    accuracy = probe_accuracies(train_x, train_y, test_x, test_y, FAST)
    assert set(accuracy) == {"logreg", "linearsvc", "adam"}
    assert all(value > 0.97 for value in accuracy.values()), accuracy


def test_shuffled_labels_score_near_chance():
    x, y = _blobs(n_per_class=100, classes=4, spread=3.0, seed=2)
    rng = np.random.default_rng(3)
    accuracy = probe_accuracies(x[:200], rng.permutation(y)[:200], x[200:], rng.permutation(y)[200:], FAST)
    assert all(value < 0.4 for value in accuracy.values()), accuracy  # chance is 0.25


def test_adam_readout_agrees_with_logistic_regression():
    x, y = _blobs(n_per_class=100, classes=5, dim=4, spread=3.0, seed=4)  # overlapping classes
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    accuracy = probe_accuracies(x[:300], y[:300], x[300:], y[300:], FAST)
    assert 0.4 < accuracy["logreg"] < 0.98
    assert abs(accuracy["adam"] - accuracy["logreg"]) < 0.05, accuracy


def test_standardise_uses_train_statistics_only():
    train, test = np.array([[0.0], [2.0]]), np.array([[10.0]])
    train_z, test_z = standardise(train, test)
    assert np.allclose(train_z.ravel(), [-1, 1], atol=1e-5) and np.isclose(test_z[0, 0], 9.0, atol=1e-4)
