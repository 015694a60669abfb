import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from protoviz_core.distance import diversity, mean_paired, paired


@pytest.mark.parametrize("metric, scipy_metric", [("mse", "sqeuclidean"), ("cosine", "cosine")])
@pytest.mark.parametrize("offset", [0.0, 50.0])  # far from the origin: the closed form must not cancel away
def test_quantities_match_scipy_cdist(metric, scipy_metric, offset):
    x = torch.randn(30, 17, generator=torch.Generator().manual_seed(0)) + offset
    x[3] = 0  # a blank prototype
    matrix = cdist(x.double().numpy(), x.double().numpy(), scipy_metric)
    matrix = np.nan_to_num(matrix, nan=1.0)  # scipy: cosine to a zero vector is undefined; ours is 1
    if metric == "mse":
        matrix = matrix / x.shape[1]
    off_diagonal = (matrix.sum() - np.trace(matrix)) / (30 * 29)
    assert diversity(x, metric) == pytest.approx(off_diagonal, rel=1e-5, abs=1e-9)  # float32 arithmetic
    x = torch.randn(30, 17, generator=torch.Generator().manual_seed(0)) + offset
    y = torch.randn(30, 17, generator=torch.Generator().manual_seed(1)) + offset
    rowwise = np.diag(cdist(x.numpy(), y.numpy(), scipy_metric)) / (x.shape[1] if metric == "mse" else 1)
    np.testing.assert_allclose(paired(x, y, metric).numpy(), rowwise, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("metric", ["mse", "cosine"])
def test_diversity_is_zero_for_identical_prototypes_and_grows_with_spread(metric):
    same = torch.ones(10, 8)
    assert diversity(same, metric) == pytest.approx(0, abs=1e-6)  # float32 rounding
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(10, 8, generator=generator)
    tight = diversity(torch.ones(10, 8) + 0.1 * base, metric)
    spread = diversity(torch.ones(10, 8) + 1.0 * base, metric)
    assert 0 < tight < spread


def test_identical_repeats_have_zero_distance_and_diversity_needs_two():
    x = torch.randn(6, 5)
    assert mean_paired(x, x.clone(), "mse") == 0 and mean_paired(x, x.clone(), "cosine") == pytest.approx(
        0, abs=1e-12
    )
    with pytest.raises(ValueError):
        diversity(x[:1], "mse")
    with pytest.raises(ValueError, match="metric"):
        diversity(x, "l1")


def _layer(vectors_per_repeat):
    """One layer of embed_epoch's output: repeats stacked, channels 0..C-1."""
    stacked = torch.stack(vectors_per_repeat)
    return {
        "channels": torch.arange(stacked.shape[1]),
        "repeats": torch.arange(1, len(stacked) + 1),
        "plain": stacked,
        "masked": stacked,
    }


def test_epoch_rows_identical_repeats_and_epochs_give_zero():
    from protoviz_core.distance import epoch_rows

    v = torch.randn(5, 7).half()
    vectors = {"layer1": _layer([v, v])}
    rows = epoch_rows("pixel", 3, vectors, following=vectors)
    by = {(r["metric"], r["masked"], r["quantity"]): r["value"] for r in rows}
    assert {r["quantity"] for r in rows} == {"diversity", "consistency", "rate_of_change"}
    for metric in ("mse", "cosine"):
        assert by[(metric, True, "consistency")] == pytest.approx(0, abs=1e-6)
        assert by[(metric, False, "rate_of_change")] == pytest.approx(0, abs=1e-6)
        assert by[(metric, True, "diversity")] == pytest.approx(diversity(v.float(), metric))
        assert by[(metric, True, "diversity")] > 0


def test_consistency_averages_every_pair_of_repeats_and_the_last_epoch_has_no_rate_of_change():
    from protoviz_core.distance import epoch_rows

    a, b, c = (torch.randn(4, 6) for _ in range(3))
    rows = epoch_rows("pixel", 0, {"layer1": _layer([a, b, c])}, following=None)
    by = {(r["metric"], r["masked"], r["quantity"]): r["value"] for r in rows}
    expected = (mean_paired(a, b, "mse") + mean_paired(a, c, "mse") + mean_paired(b, c, "mse")) / 3
    assert by[("mse", False, "consistency")] == pytest.approx(expected)
    assert not any(r["quantity"] == "rate_of_change" for r in rows)
    single = epoch_rows("pixel", 0, {"layer1": _layer([a])}, following=None)
    assert {r["quantity"] for r in single} == {"diversity"}  # one repeat: no consistency


def test_epoch_rows_refuse_a_following_epoch_with_other_channels():
    from protoviz_core.distance import epoch_rows
    from protoviz_core.errors import MissingInputError

    v = torch.randn(4, 6)
    following = {"layer1": {**_layer([v]), "channels": torch.tensor([0, 1, 2, 9])}}
    with pytest.raises(MissingInputError, match="different channels.*rerun dvc repro embed"):
        epoch_rows("pixel", 0, {"layer1": _layer([v])}, following=following)
