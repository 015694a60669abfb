import numpy as np
import torch

from protoviz_core.measures.readability import (
    control_scores,
    observer_specificity,
    score_layer,
    texture_features,
    two_afc,
    unit_queries,
)


def _units_with_features(
    units: int = 6, per_unit: int = 40, dim: int = 16, noise: float = 0.5, seed: int = 0
):
    """A toy world: each unit prefers one direction of feature space. Returns the candidates'
    features (N, D), every unit's activation on them (N, C) and each unit's direction (C, D)."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(units, dim, generator=generator), dim=1)
    features = torch.randn(units * per_unit, dim, generator=generator) * noise
    features += directions.repeat_interleave(per_unit, dim=0)  # each image shows one unit's feature
    activations = features @ directions.T  # (N, C)
    return features, activations, directions


def test_queries_are_each_units_best_and_draws_from_its_lowest_part():
    activations = torch.tensor([[5.0, 0.0], [4.0, 1.0], [3.0, 2.0], [2.0, 3.0], [1.0, 4.0], [0.0, 5.0]])
    top, bottom = unit_queries(activations, top=2, bottom_fraction=0.5, bottom_draws=2, seed=0)
    assert top.tolist() == [[0, 1], [5, 4]]
    assert set(bottom[0].tolist()) <= {3, 4, 5} and set(bottom[1].tolist()) <= {0, 1, 2}
    assert len(set(bottom[0].tolist())) == 2


def test_explanations_that_show_the_units_feature_answer_well_and_another_units_sit_at_chance():
    features, activations, directions = _units_with_features()
    top, bottom = unit_queries(activations, top=5, bottom_fraction=0.3, bottom_draws=10, seed=0)
    plus, minus = features[top], features[bottom]
    own = directions[:, None, :] + 0.3 * torch.randn(6, 4, 16, generator=torch.Generator().manual_seed(1))
    assert two_afc(plus, minus, own).min() > 0.9
    control = control_scores(plus, minus, own)
    assert abs(float(control.mean()) - 0.5) < 0.1
    # Explanations that carry nothing (noise): near chance too, far below the unit's own.
    noise = torch.randn(6, 4, 16, generator=torch.Generator().manual_seed(2))
    assert float(two_afc(plus, minus, noise).mean()) < 0.75


def test_score_layer_gives_prototypes_exemplars_and_control_per_unit():
    features, activations, directions = _units_with_features()
    prototypes = directions[:, None, :].expand(6, 2, 16)  # exactly the feature
    exemplars = directions[:, None, :].roll(1, dims=0).expand(6, 8, 16)  # the neighbour's: wrong
    scores = score_layer(
        activations, features, prototypes, exemplars, top=5, bottom_fraction=0.3, bottom_draws=10, seed=0
    )
    assert set(scores) == {"prototypes", "exemplars", "control"} and all(len(v) == 6 for v in scores.values())
    assert scores["prototypes"].min() > 0.9 and scores["exemplars"].mean() < 0.5
    two = score_layer(
        activations[:, :2],
        features,
        prototypes[:2],
        exemplars[:2],
        top=5,
        bottom_fraction=0.3,
        bottom_draws=10,
        seed=0,
    )
    assert torch.isnan(two["control"]).all()  # two units leave nothing for the control's E-


def _texture(colour: tuple[float, float, float], vertical: bool, size: int = 24) -> torch.Tensor:
    image = torch.full((3, size, size), 0.1)
    for c, value in enumerate(colour):
        if vertical:
            image[c, :, ::4] = value
        else:
            image[c, ::4, :] = value
    return image


def test_the_observer_tells_colour_and_orientation_apart_and_weights_pixels_by_the_mask():
    yellow_v, yellow_h, red_v = (
        _texture((0.9, 0.9, 0.1), True),
        _texture((0.9, 0.9, 0.1), False),
        _texture((0.9, 0.1, 0.1), True),
    )
    shifted = yellow_v.roll(2, dims=2)  # the same texture, elements elsewhere
    f = texture_features(torch.stack([yellow_v, yellow_h, red_v, shifted]))
    assert torch.allclose(f.norm(dim=1), torch.ones(4))
    same, orientation, colour = f[0] @ f[3], f[0] @ f[1], f[0] @ f[2]
    assert same > 0.99 and orientation < same - 0.05 and colour < same - 0.05
    # A mask: the observer sees only where the unit looks. Yellow inside, red outside reads as yellow.
    half = red_v.clone()
    half[:, 6:18, 6:18] = yellow_v[:, 6:18, 6:18]
    mask = torch.zeros(24, 24)
    mask[6:18, 6:18] = 1.0
    seen = texture_features(half[None], mask)[0]
    assert seen @ texture_features(yellow_v[None], mask)[0] > seen @ texture_features(red_v[None], mask)[0]
    uint8 = texture_features((torch.stack([yellow_v]) * 255).round().to(torch.uint8))
    assert torch.allclose(uint8, f[:1], atol=0.02)


def test_the_score_of_one_unit_does_not_depend_on_numpy_state():
    np.random.seed(1)
    features, activations, directions = _units_with_features()
    first = unit_queries(activations, 5, 0.3, 10, seed=3)
    np.random.seed(2)
    assert all(torch.equal(a, b) for a, b in zip(first, unit_queries(activations, 5, 0.3, 10, seed=3)))


def test_specificity_is_low_when_a_units_searches_agree_and_near_one_when_they_are_random():
    generator = torch.Generator().manual_seed(0)
    units = torch.nn.functional.normalize(torch.randn(6, 1, 16, generator=generator), dim=-1)
    agreeing = units + 0.05 * torch.randn(6, 3, 16, generator=generator)  # 3 repeats near each unit's own
    assert observer_specificity(agreeing) < 0.1
    random = torch.randn(6, 3, 16, generator=generator)  # searches unrelated to the unit
    assert 0.8 < observer_specificity(random) < 1.2
    assert np.isnan(observer_specificity(agreeing[:, :1]))


def test_a_network_observer_sees_explanations_through_the_mask_and_features_are_unit_norm():
    from protoviz_core.measures.readability import Observer

    torch.manual_seed(0)
    observer = Observer("mobilenet_v2", "random", batch_size=4, device=torch.device("cpu"))
    images = (torch.rand(3, 3, 24, 24) * 255).round().to(torch.uint8)
    whole = observer(images)
    assert whole.shape == (3, 1280) and torch.allclose(whole.norm(dim=1), torch.ones(3), atol=1e-5)
    mask = torch.zeros(24, 24)
    mask[8:16, 8:16] = 1.0
    changed = images.clone()
    changed[:, :, :4] = 0  # outside the mask: the masked view does not see it
    assert torch.allclose(observer(images, mask), observer(changed, mask), atol=1e-5)
    assert not torch.allclose(observer(images), observer(changed), atol=1e-3)
    assert Observer("texture", "imagenet", 4, torch.device("cpu"))(images).shape[0] == 3
