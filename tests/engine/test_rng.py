import torch

from protoviz_core.engine.rng import derive_seed, keyed_normal, stream_keys


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


def test_derived_seeds_are_stable_distinct_and_in_range():
    assert derive_seed(1, 0, 5, "layer3", 2) == derive_seed(1, 0, 5, "layer3", 2)
    seeds = {
        derive_seed(run, epoch, layer, repeat)
        for run in (1, 2, 3)
        for epoch in range(50)
        for layer in ("layer1", "layer2")
        for repeat in (1, 2)
    }
    assert len(seeds) == 3 * 50 * 2 * 2
    assert all(0 <= seed < 2**31 for seed in seeds)
    assert derive_seed(1, "2") != derive_seed(1, 2)  # parts keep their type
    import numpy as np

    assert derive_seed(np.int64(1), 2) == derive_seed(1, 2)  # but any integer is an int
