import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from protoviz_core.measures.distance import diversity, mean_paired, paired


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


def _layer(vectors_per_repeat, mask=None):
    """One layer of embed_epoch's output: repeats stacked, channels 0..C-1; with a mask (S, S),
    the vectors are pixel images (R, C, 3*S*S) and "masked" holds them times the mask."""
    stacked = torch.stack(vectors_per_repeat)
    layer = {
        "channels": torch.arange(stacked.shape[1]),
        "repeats": torch.arange(1, len(stacked) + 1),
        "plain": stacked,
        "masked": stacked,
    }
    if mask is not None:
        layer["masked"] = stacked * mask.expand(3, *mask.shape).flatten()
        layer["mask"] = mask
    return layer


def test_epoch_rows_identical_repeats_and_epochs_give_zero():
    from protoviz_core.measures.distance import epoch_rows

    v = torch.randn(5, 7).half()
    vectors = {"layer1": _layer([v, v])}
    rows = epoch_rows("pixel", 3, vectors, following=vectors)
    by = {(r["metric"], r["masked"], r["quantity"]): r["value"] for r in rows}
    # Repeats that are the same images: a floor of 0 and its interval, no ratios to it.
    assert {r["quantity"] for r in rows} == {
        "diversity",
        "consistency",
        "rate_of_change",
        "consistency_low",
        "consistency_high",
    }
    for metric in ("mse", "cosine"):
        assert by[(metric, True, "consistency")] == pytest.approx(0, abs=1e-6)
        assert by[(metric, False, "rate_of_change")] == pytest.approx(0, abs=1e-6)
        assert by[(metric, True, "diversity")] == pytest.approx(diversity(v.float(), metric))
        assert by[(metric, True, "diversity")] > 0


def test_consistency_averages_every_pair_of_repeats_and_the_last_epoch_has_no_rate_of_change():
    from protoviz_core.measures.distance import epoch_rows

    a, b, c = (torch.randn(4, 6) for _ in range(3))
    rows = epoch_rows("pixel", 0, {"layer1": _layer([a, b, c])}, following=None)
    by = {(r["metric"], r["masked"], r["quantity"]): r["value"] for r in rows}
    expected = (mean_paired(a, b, "mse") + mean_paired(a, c, "mse") + mean_paired(b, c, "mse")) / 3
    assert by[("mse", False, "consistency")] == pytest.approx(expected)
    assert not any(r["quantity"].startswith("rate_of_change") for r in rows)
    single = epoch_rows("pixel", 0, {"layer1": _layer([a])}, following=None)
    assert {r["quantity"] for r in single} == {"diversity"}  # one repeat: no consistency


def test_epoch_rows_refuse_a_following_epoch_with_other_channels():
    from protoviz_core.infra.errors import MissingInputError
    from protoviz_core.measures.distance import epoch_rows

    v = torch.randn(4, 6)
    following = {"layer1": {**_layer([v]), "channels": torch.tensor([0, 1, 2, 9])}}
    with pytest.raises(MissingInputError, match="different channels.*rerun dvc repro embed"):
        epoch_rows("pixel", 0, {"layer1": _layer([v])}, following=following)


def _weighted_by_hand(a, b, mask):
    """sum(w (a - b)^2) / sum(w) over pixels and colours, a and b (3*S*S,) images, w the (S, S) mask."""
    weights = mask.expand(3, *mask.shape).flatten().double()
    return float((weights * (a.double() - b.double()).square()).sum() / weights.sum())


def test_weighted_mse_is_the_mask_weighted_mean_and_does_not_shrink_with_the_mask():
    from protoviz_core.measures.distance import epoch_rows

    generator = torch.Generator().manual_seed(0)
    size, channels = 6, 5
    images = [torch.rand(channels, 3 * size * size, generator=generator) for _ in range(2)]
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    wide = torch.exp(-((yy - 2.5) ** 2 + (xx - 2.5) ** 2) / (2 * 3.0**2))
    narrow = torch.exp(-((yy - 2.5) ** 2 + (xx - 2.5) ** 2) / (2 * 1.0**2))

    def by(mask):
        rows = epoch_rows("pixel", 0, {"layer1": _layer(images, mask)}, following=None)
        return {(r["metric"], r["quantity"]): r["value"] for r in rows if r["masked"]}

    a, b = images
    pairs = [(i, j) for i in range(channels) for j in range(channels) if i != j]
    for mask in (wide, narrow):
        weighted = by(mask)
        by_hand = sum(
            _weighted_by_hand(a[i], a[j], mask) + _weighted_by_hand(b[i], b[j], mask) for i, j in pairs
        )
        assert weighted[("weighted_mse", "diversity")] == pytest.approx(by_hand / (2 * len(pairs)), rel=1e-5)
        floor = sum(_weighted_by_hand(a[c], b[c], mask) for c in range(channels)) / channels
        assert weighted[("weighted_mse", "consistency")] == pytest.approx(floor, rel=1e-5)
    # Uniform random images: the paper's masked MSE falls with the mask's area, the weighted mean does not.
    wide_rows, narrow_rows = by(wide), by(narrow)
    paper_drop = narrow_rows[("mse", "diversity")] / wide_rows[("mse", "diversity")]
    weighted_drop = narrow_rows[("weighted_mse", "diversity")] / wide_rows[("weighted_mse", "diversity")]
    assert paper_drop < 0.3
    assert 0.7 < weighted_drop < 1.3
    # A mask scaled by a constant weighs pixels alike.
    assert by(0.5 * wide)[("weighted_mse", "diversity")] == pytest.approx(
        wide_rows[("weighted_mse", "diversity")]
    )


def test_weighted_mse_is_only_measured_where_a_mask_is_known():
    from protoviz_core.measures.distance import epoch_rows

    v = torch.rand(4, 3 * 4 * 4)
    mask = torch.ones(4, 4)
    assert not any(r["metric"] == "weighted_mse" for r in epoch_rows("pixel", 0, {"l": _layer([v, v])}, None))
    in_a_network = epoch_rows("resnet50", 0, {"l": _layer([v, v], mask)}, None)
    assert not any(r["metric"] == "weighted_mse" for r in in_a_network)
    in_pixels = epoch_rows("pixel", 0, {"l": _layer([v, v], mask)}, None)
    assert {r["masked"] for r in in_pixels if r["metric"] == "weighted_mse"} == {True}


def _units(generator, channels, dim, unit_spread, search_noise):
    """Two repeats of ``channels`` prototypes: a unit's own image (``unit_spread`` apart from the
    other units') plus independent search noise per repeat."""
    centres = unit_spread * torch.randn(channels, dim, generator=generator)
    return [centres + search_noise * torch.randn(channels, dim, generator=generator) for _ in range(2)]


def test_ratio_to_the_noise_floor_separates_units_that_differ_from_search_noise():
    from protoviz_core.measures.distance import epoch_rows

    generator = torch.Generator().manual_seed(0)
    distinct = _units(generator, 40, 30, unit_spread=1.0, search_noise=0.3)
    # The control: every unit's prototypes are search noise around one shared image.
    alike = _units(generator, 40, 30, unit_spread=0.0, search_noise=0.3)
    later = _units(generator, 40, 30, unit_spread=0.0, search_noise=0.3)

    def by(first, second):
        rows = epoch_rows("pixel", 0, {"l": _layer(first)}, {"l": _layer(second)})
        return {r["quantity"]: r["value"] for r in rows if r["metric"] == "mse" and not r["masked"]}

    units_differ = by(distinct, distinct)
    assert units_differ["diversity_to_floor_low"] > 5
    assert (
        units_differ["diversity_to_floor_low"]
        < units_differ["diversity_to_floor"]
        < units_differ["diversity_to_floor_high"]
    )
    assert units_differ["consistency_low"] < units_differ["consistency"] < units_differ["consistency_high"]
    noise_only = by(alike, later)
    assert noise_only["diversity_to_floor_low"] < 1 < noise_only["diversity_to_floor_high"]
    assert noise_only["diversity_to_floor"] == pytest.approx(1, abs=0.15)
    # Prototypes that are new search noise around the same image change no more than the floor.
    assert noise_only["rate_of_change_to_floor"] == pytest.approx(1, abs=0.15)
    assert noise_only["rate_of_change_to_floor_low"] < 1 < noise_only["rate_of_change_to_floor_high"]
    assert by(alike, later) == noise_only  # the bootstrap is seeded: the same rows again
