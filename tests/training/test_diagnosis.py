"""A run that learned nothing is named in one warning line, with the params to look at."""

import torch

from protoviz_core.training.diagnosis import collapsed, learned_nothing


def test_a_run_whose_loss_ends_at_chance_is_named_with_the_params_to_look_at():
    # SimCLR at batch 32: ln(63) = 4.143. 4.15 is where the demo's clrjit run ended at
    # temperature 0.5; 3.0 is a network that tells views apart.
    warning = learned_nothing("simclr", 4.15, 32)
    assert warning and "4.143" in warning and "train.temperature" in warning and "train.lr" in warning
    assert learned_nothing("simclr", 3.0, 32) is None
    assert learned_nothing("simclr", 4.15, 256) is None  # ln(511) = 6.24: far below chance at batch 256
    # Supervision: ln(10) = 2.303, a classifier with uniform outputs. 2.290 is where the demo's
    # supervised run ends at train.lr 0.06; 2.18 where it ends at 0.0125.
    warning = learned_nothing("supervised", 2.290, 32)
    assert warning and "2.303" in warning and "train.lr" in warning
    assert learned_nothing("supervised", 2.18, 32) is None
    # DINO's teacher gone uniform: ln(2048) = 7.625 (the learner comparison's DINO run).
    assert "7.625" in learned_nothing("dino", 7.62, 32)
    assert learned_nothing("byol", -0.05, 32) and learned_nothing("byol", -0.9, 32) is None
    # Losses with no chance level, and a run with no loss, give no warning.
    assert learned_nothing("barlowtwins", 1e4, 32) is None and learned_nothing("simclr", None, 32) is None


def test_features_of_one_direction_are_named_as_a_collapse_with_train_lr():
    healthy = torch.rand(64, 512) * 5  # non-negative, like pooled ReLU features: similar, not one
    assert collapsed("byol", healthy, 0.06) is None
    direction = torch.rand(1, 512)
    one_way = direction * torch.linspace(1, 50, 64)[:, None]  # different lengths, one direction
    warning = collapsed("byol", one_way, 1000.0)
    assert (
        warning and "byol" in warning and "64 training images" in warning and "train.lr (now 1000)" in warning
    )
    assert collapsed("dino", torch.zeros(8, 512), 1.0)  # every unit dead
    # A control a little off one direction (relative noise 1e-4) is not a collapse.
    assert (
        collapsed("byol", one_way + 1e-4 * one_way.norm(dim=1, keepdim=True) * torch.randn(64, 512), 1.0)
        is None
    )
