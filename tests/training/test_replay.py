"""Which epochs a replay of lost checkpoints trains, and how its weights are compared (no training;
the replays themselves: tests/training/test_loop.py)."""

import pytest
import torch

from protoviz_core.training.replay import flat_tensors, replay_segments, same_weights


@pytest.mark.parametrize(
    ("holes", "last_finished", "snapshots", "segments"),
    [
        ([0, 90], 100, range(10, 100, 10), [(0, 1), (90, 91)]),  # each from its own start
        ([3], 3, [], [(3, 3)]),  # the last finished epoch: nothing after it to check against
        ([1, 2], 4, [], [(1, 3)]),  # the second is on the first's way
        ([2, 5], 6, [2], [(2, 6)]),  # the second's snapshot (2) lies before the first's replay ends (3)
        ([2, 5], 6, [4], [(2, 3), (5, 6)]),
    ],
)
def test_replay_segments(holes, last_finished, snapshots, segments):
    assert replay_segments(holes, last_finished, snapshots) == segments


def test_a_learners_extra_state_is_flattened_in():
    bank = torch.ones(2)
    assert flat_tensors({"w": bank, "_extra_state": {"bank": bank}}) == {"w": bank, "_extra_state.bank": bank}


def test_same_weights_allows_float32_rounding_only():
    saved = {"w": torch.tensor([1.0, 2.0]), "extra": {"bank": torch.zeros(3)}}
    assert same_weights(saved, {"w": torch.tensor([1.0, 2.0 + 1e-6]), "extra.bank": torch.zeros(3)})
    assert not same_weights(saved, {"w": torch.tensor([1.0, 2.1]), "extra.bank": torch.zeros(3)})
    assert not same_weights(saved, {"w": torch.tensor([1.0, 2.0])})  # a tensor missing
