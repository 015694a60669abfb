"""BatchedCMAES against pycma (the reference implementation) on standard test functions."""

import math

import cma
import numpy as np
import pytest
import torch

from protoviz_core import BatchedCMAES


def sphere(x):
    return (x**2).sum(-1)


def ellipsoid(x):
    n = x.shape[-1]
    weights = 10.0 ** (6 * np.arange(n) / (n - 1))
    return ((torch.as_tensor(weights) if torch.is_tensor(x) else weights) * x**2).sum(-1)


def rosenbrock(x):
    return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)


SEEDS = 7


def _ours(f, n, start, popsize, generations):
    es = BatchedCMAES(torch.full((SEEDS, n), start), 0.5, popsize, seed=11)  # one instance per seed
    for _ in range(generations):
        samples = es.ask()  # (SEEDS, P, n)
        es.tell(f(samples.double()).float())
    return np.median(f(es.mean.double()).numpy())


def _pycma(f, n, start, popsize, generations):
    finals = []
    options = {
        "CMA_diagonal": True,
        "CMA_active": False,
        "popsize": popsize,
        "verbose": -9,
        "tolfun": 0,
        "tolx": 0,
        "tolfunhist": 0,
        "tolflatfitness": 1e9,
        "tolstagnation": 1e9,
    }
    for seed in range(1, SEEDS + 1):
        es = cma.CMAEvolutionStrategy(np.full(n, start), 0.5, {**options, "seed": seed})
        for _ in range(generations):
            samples = es.ask()
            es.tell(samples, [float(f(np.asarray(s))) for s in samples])
        finals.append(f(np.asarray(es.mean)))
    return np.median(finals)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("f, start", [(sphere, 1.0), (ellipsoid, 1.0), (rosenbrock, 0.0)])
@pytest.mark.parametrize("n, generations", [(10, 120), (40, 300)])
def test_same_budget_reaches_pycmas_median_within_a_small_factor(f, start, n, generations):
    popsize = 4 + int(3 * math.log(n))
    ours = _ours(f, n, start, popsize, generations)
    reference = _pycma(f, n, start, popsize, generations)
    assert ours <= 3 * reference, f"ours {ours:.3g} vs pycma {reference:.3g}"


def test_an_instance_runs_the_same_alone_or_in_a_batch():
    def run(keys):
        es = BatchedCMAES(torch.ones(len(keys), 6), 0.7, 8, seed=4, keys=keys)
        for _ in range(15):
            es.tell(sphere(es.ask()))
        return es.mean

    batch = run(torch.tensor([3, 9, 20]))
    alone = run(torch.tensor([9]))
    torch.testing.assert_close(alone[0], batch[1])


def test_keeping_some_instances_leaves_their_searches_unchanged():
    full = BatchedCMAES(torch.ones(3, 6), 0.7, 8, seed=4, keys=torch.tensor([3, 9, 20]))
    part = BatchedCMAES(torch.ones(3, 6), 0.7, 8, seed=4, keys=torch.tensor([3, 9, 20]))
    for generation in range(15):
        full.tell(sphere(full.ask()))
        part.tell(sphere(part.ask()))
        if generation == 4:
            part.keep(torch.tensor([2, 1]))  # instance 0 stops; the others swap places
    torch.testing.assert_close(part.mean, full.mean[[2, 1]])
    torch.testing.assert_close(part.sigma, full.sigma[[2, 1]])
    part.ask()
    with pytest.raises(RuntimeError, match="after tell"):
        part.keep(torch.tensor([0]))


def test_step_size_shrinks_near_the_optimum_and_grows_on_a_slope():
    es = BatchedCMAES(torch.zeros(1, 5), 1.0, 10)
    for _ in range(60):
        es.tell(sphere(es.ask()))
    assert es.sigma.item() < 0.1
    slope = BatchedCMAES(torch.zeros(1, 5), 1e-3, 10)
    for _ in range(30):
        slope.tell(slope.ask()[..., 0])  # linear: keep going down in x0
    assert slope.sigma.item() > 1e-2


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="mean0 must be"):
        BatchedCMAES(torch.zeros(5), 1.0, 10)
    with pytest.raises(ValueError, match="popsize"):
        BatchedCMAES(torch.zeros(2, 5), 1.0, 2)
    es = BatchedCMAES(torch.zeros(2, 5), 1.0, 10)
    with pytest.raises(RuntimeError, match="ask"):
        es.tell(torch.zeros(2, 10))
    es.ask()
    with pytest.raises(ValueError, match="fitness must be"):
        es.tell(torch.zeros(2, 9))


def test_the_authors_evolution_moves_only_the_mean_to_its_weighted_best_half():
    start = torch.zeros(2, 5)
    es = BatchedCMAES(start, 2.0, 6, seed=3, adapt=False)
    samples = es.ask()  # (2, 6, 5)
    fitness = torch.arange(12, dtype=torch.float32).view(2, 6).flip(1)  # the last sample is the best
    es.tell(fitness)
    # log(mu + 1) - log i
    weights = torch.log(torch.tensor(4.0)) - torch.log(torch.arange(1, 4, dtype=torch.float32))
    weights = weights / weights.sum()
    expected = torch.einsum("m,bmn->bn", weights, samples[:, [5, 4, 3]])  # the best three, best first
    torch.testing.assert_close(es.mean, expected)
    assert torch.equal(es.sigma, torch.full((2,), 2.0)) and torch.equal(es.variance, torch.ones(2, 5))
