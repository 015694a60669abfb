import torch

from protoviz_core.rng import keyed_normal, stream_keys


def test_a_stream_does_not_depend_on_its_neighbours():
    keys = stream_keys(3, torch.arange(10))
    together = keyed_normal(keys, step=2, shape=(5, 7))
    alone = keyed_normal(keys[[7]], step=2, shape=(5, 7))
    reordered = keyed_normal(keys.flip(0), step=2, shape=(5, 7))
    assert together.shape == (10, 5, 7)
    assert torch.equal(alone[0], together[7])
    assert torch.equal(reordered.flip(0), together)


def test_streams_steps_and_seeds_differ():
    keys = stream_keys(0, torch.arange(4))
    a = keyed_normal(keys, 0, (1000,))
    assert not torch.equal(a, keyed_normal(keys, 1, (1000,)))
    assert not torch.equal(a, keyed_normal(stream_keys(1, torch.arange(4)), 0, (1000,)))
    correlation = torch.corrcoef(a)  # (4, 4): independent streams
    assert (correlation - torch.eye(4)).abs().max() < 0.15


def test_samples_are_standard_normal():
    sample = keyed_normal(stream_keys(5, torch.arange(8)), 0, (20_000,)).flatten().double()
    assert abs(sample.mean()) < 0.01 and abs(sample.std() - 1) < 0.01
    # Tail mass matches the normal distribution's: P(|x| > 2) = 0.0455.
    assert abs((sample.abs() > 2).double().mean() - 0.0455) < 0.003
