import numpy as np
import pytest
import torch

from protoviz_core.measures.similarity import (
    best_matches,
    cka,
    gram,
    invert_assignment,
    match_units,
    one_to_one,
    settled_epoch,
    unit_correlations,
)


@pytest.fixture
def representation():
    """200 images, a 64-unit layer of 3 x 3 maps: (N, C, h, w)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(200, 64, 3, 3, generator=generator)


def _orthogonal(size: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=torch.Generator().manual_seed(seed)))
    return q


def test_cka_of_a_representation_with_itself_is_one(representation):
    assert cka(gram(representation), gram(representation)) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_rotation_and_isotropic_scaling_but_not_to_any_linear_map(representation):
    flat = representation.reshape(200, -1)
    rotated = 3.7 * flat @ _orthogonal(flat.shape[1], seed=1)
    assert cka(gram(flat), gram(rotated)) == pytest.approx(1.0, abs=1e-9)
    # An invertible map that stretches some directions 100-fold: the same information, another geometry.
    stretch = torch.diag(torch.logspace(0, 2, flat.shape[1], dtype=torch.float32))
    skewed = flat @ _orthogonal(flat.shape[1], seed=2) @ stretch
    assert cka(gram(flat), gram(skewed)) < 0.6


def test_unrelated_representations_score_near_zero_where_the_biased_estimator_does_not(representation):
    """Independent random features of width 576 on 200 images: the unbiased CKA is about 0; the
    biased (centred HSIC) estimator, measured here, gives 0.74."""
    other = torch.randn(200, 576, generator=torch.Generator().manual_seed(3))
    first, second = gram(representation), gram(other)
    assert abs(cka(first, second)) < 0.05
    centre = torch.eye(200, dtype=torch.float64) - 1 / 200
    biased = lambda a, b: float(torch.trace(a @ centre @ b @ centre))  # noqa: E731
    assert biased(first, second) / np.sqrt(biased(first, first) * biased(second, second)) > 0.5


def test_cka_refuses_kernels_of_different_images_and_is_nan_for_a_dead_layer(representation):
    with pytest.raises(ValueError, match="N >= 4"):
        cka(gram(representation), gram(representation[:100]))
    assert np.isnan(cka(gram(representation), gram(torch.ones(200, 10))))


def test_unit_matching_recovers_a_permutation_exactly_and_a_noisy_copy_mostly(representation):
    units = representation[:, :, 1, 1]  # (N, C): each channel's centre unit
    permutation = torch.randperm(64, generator=torch.Generator().manual_seed(4))
    shuffled = units[:, permutation]  # shuffled[:, j] is units[:, permutation[j]]
    inverse = torch.argsort(permutation).numpy()
    index, correlation = best_matches(unit_correlations(units, shuffled))
    assert np.array_equal(index, inverse) and np.allclose(correlation, 1.0)
    matched, _ = one_to_one(unit_correlations(units, shuffled))
    assert np.array_equal(matched, inverse)

    noisy = shuffled + 0.5 * torch.randn(shuffled.shape, generator=torch.Generator().manual_seed(5))
    matched, correlation = one_to_one(unit_correlations(units, noisy))
    assert (matched == inverse).mean() > 0.9 and np.median(correlation) > 0.8
    # The control: an unrelated layer's units match no better than chance would pair them.
    unrelated = torch.randn(200, 64, generator=torch.Generator().manual_seed(6))
    matched, correlation = one_to_one(unit_correlations(units, unrelated))
    assert (matched == inverse).mean() < 0.1 and np.median(correlation) < 0.3


def test_the_atlas_matches_extracted_units_to_all_units_and_to_those_with_prototypes(representation):
    """The other run is this one's channels permuted: its best unit and one-to-one partner are the
    permuted channel; among the other run's extracted units, the best is that channel where it was
    extracted, and otherwise another extracted unit with a lower correlation."""
    units = representation[:, :, 1, 1]
    permutation = torch.randperm(64, generator=torch.Generator().manual_seed(8))
    theirs = units[:, permutation]
    where = torch.argsort(permutation)  # units[:, c] is theirs[:, where[c]]
    mine_channels = [0, 9, 18, 27]
    shown = [int(where[0]), int(where[9]), 5, 6]  # the partners of 0 and 9 have prototypes
    correlations = unit_correlations(units, theirs)
    found = match_units(correlations, one_to_one(correlations), mine_channels, shown)
    assert [c for c, _ in found["best"]] == [int(where[c]) for c in mine_channels]
    assert [c for c, _ in found["one_to_one"]] == [int(where[c]) for c in mine_channels]
    assert all(r == pytest.approx(1.0) for _, r in found["best"])
    assert [c for c, _ in found["shown"][:2]] == shown[:2]
    assert all(c in shown and r < 0.5 for c, r in found["shown"][2:])
    # The other run's view of the same assignment: each partner points back.
    back, _ = invert_assignment(*one_to_one(correlations), 64)
    assert [int(back[where[c]]) for c in mine_channels] == mine_channels


def test_a_dead_unit_correlates_zero_and_more_rows_than_columns_leave_some_unmatched():
    generator = torch.Generator().manual_seed(7)
    first, second = torch.randn(50, 5, generator=generator), torch.randn(50, 3, generator=generator)
    first[:, 2] = 4.0
    correlations = unit_correlations(first, second)
    assert np.all(correlations[2] == 0) and np.all(np.abs(correlations) <= 1 + 1e-12)
    matched, value = one_to_one(correlations)
    assert (matched >= 0).sum() == 3 and np.isnan(value[matched < 0]).all()


def test_a_layer_settles_at_the_first_epoch_from_which_it_stays_close_to_its_final_form():
    assert settled_epoch([0, 1, 2, 3, 4], [0.2, 0.95, 0.7, 0.92, 1.0]) == 3
    assert settled_epoch([0, 1, 2], [0.95, 0.96, 1.0]) == 0
    assert settled_epoch([0, 1], [float("nan"), float("nan")]) is None
