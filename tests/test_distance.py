import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from protoviz_core.distance import diversity, mean_paired, paired, pairwise


@pytest.mark.parametrize("metric, scipy_metric", [("mse", "sqeuclidean"), ("cosine", "cosine")])
def test_matrices_match_scipy_cdist(metric, scipy_metric):
    x = torch.randn(30, 17, generator=torch.Generator().manual_seed(0))
    expected = cdist(x.numpy(), x.numpy(), scipy_metric)
    if metric == "mse":
        expected = expected / x.shape[1]
    np.testing.assert_allclose(pairwise(x, metric).numpy(), expected, atol=1e-9)
    y = torch.randn(30, 17, generator=torch.Generator().manual_seed(1))
    rowwise = np.diag(cdist(x.numpy(), y.numpy(), scipy_metric)) / (x.shape[1] if metric == "mse" else 1)
    np.testing.assert_allclose(paired(x, y, metric).numpy(), rowwise, atol=1e-9)


@pytest.mark.parametrize("metric", ["mse", "cosine"])
def test_diversity_is_zero_for_identical_prototypes_and_grows_with_spread(metric):
    same = torch.ones(10, 8)
    assert diversity(same, metric) == pytest.approx(0, abs=1e-12)
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(10, 8, generator=generator)
    tight = diversity(torch.ones(10, 8) + 0.1 * base, metric)
    spread = diversity(torch.ones(10, 8) + 1.0 * base, metric)
    assert 0 < tight < spread


def test_identical_repeats_have_zero_distance_and_diversity_needs_two():
    x = torch.randn(6, 5)
    assert mean_paired(x, x.clone(), "mse") == 0 and mean_paired(x, x.clone(), "cosine") == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError):
        diversity(x[:1], "mse")
    with pytest.raises(ValueError, match="metric"):
        pairwise(x, "l1")


def test_epoch_rows_identical_repeats_and_epochs_give_zero():
    from protoviz_core.distance import epoch_rows

    v = torch.randn(5, 7).half()
    vectors = {f"layer1/r{r}/{kind}": v for r in (1, 2) for kind in ("plain", "masked")}
    vectors.update({f"layer1/r{r}/channels": torch.arange(5) for r in (1, 2)})
    rows = epoch_rows("pixel", 3, vectors, following=vectors)
    by = {(r["metric"], r["masked"], r["quantity"]): r["value"] for r in rows}
    for metric in ("mse", "cosine"):
        assert by[(metric, True, "consistency")] == pytest.approx(0, abs=1e-6)
        assert by[(metric, False, "rate_of_change")] == pytest.approx(0, abs=1e-6)
        assert by[(metric, True, "diversity")] == pytest.approx(by[(metric, True, "diversity_r1")])
        assert by[(metric, True, "diversity")] > 0
