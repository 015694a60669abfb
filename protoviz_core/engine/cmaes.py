"""Many independent CMA-ES searches advanced together as tensors.

The evolution strategy is CMA-ES (Hansen & Ostermeier 2001; parameters as in
Hansen, "The CMA Evolution Strategy: A Tutorial", 2016) with a diagonal covariance
matrix, the separable variant sep-CMA-ES of Ros & Hansen (2008). The diagonal keeps
memory linear in the dimension, so 512 channels x 40 samples x 4096 latent
dimensions fit on one GPU, while still adapting the step size (cumulative step-size
adaptation) and one scale per coordinate. The paper's first stage (Sec. 2.1, 6.2)
cites CMA-ES and its limited-memory variant; this is the diagonal member of that
family, matching pycma's ``CMA_diagonal`` option.

Every instance b has its own mean (n,), step size, diagonal covariance and evolution
paths, and its own random stream: instance b's samples depend only on its key, not
on which other instances share the tensor.

``adapt=False`` is the evolution of the paper authors' extraction code
(Animadversio/Prototype_Distribution, ``cma_independent_parallel_optimize``): an
isotropic (mu/mu_w, lambda) evolution strategy with a fixed step size, whose mean moves to
the weighted recombination of its best mu = lambda // 2 samples with the lab's weights
``log(mu + 1) - log(i)``; no step-size or covariance adaptation.
"""

from __future__ import annotations

import math

import torch

from protoviz_core.engine.rng import keyed_normal, stream_keys


class BatchedCMAES:
    """B independent sep-CMA-ES instances in dimension n, minimising.

    Args:
        mean0: (B, n) initial means.
        sigma0: initial step size (same for all instances), > 0.
        popsize: samples per instance per generation (lambda), >= 4. Hansen's
            default is ``4 + floor(3 ln n)``, 28 for n = 4096 (the lab's
            ``4 + floor(3 log2 n)`` gives 40).
        seed: the random seed.
        keys: (B,) integer ids of the instances (e.g. channel indices) that, with
            ``seed``, select each instance's random stream; default 0..B-1.
        device: where the state lives (default: mean0's device).
        adapt: False: the authors' fixed-step evolution (module docstring): sigma and the
            covariance stay as they started, only the mean moves.

    Use: ``x = es.ask()`` -> (B, P, n) samples; evaluate; ``es.tell(f)`` with
    fitness (B, P), lower is better. ``es.mean`` (B, n) is the current estimate.

    Examples:
        Three instances minimise the sphere function in 8 dimensions at once:

        >>> import torch
        >>> es = BatchedCMAES(torch.full((3, 8), 2.0), sigma0=0.5, popsize=10, seed=0)
        >>> for generation in range(60):
        ...     samples = es.ask()  # (3, 10, 8)
        ...     es.tell(samples.square().sum(dim=-1))  # fitness (3, 10)
        >>> bool((es.mean.norm(dim=1) < 0.1).all())  # every instance near the optimum 0
        True
    """

    def __init__(
        self,
        mean0: torch.Tensor,
        sigma0: float,
        popsize: int,
        *,
        seed: int = 0,
        keys: torch.Tensor | None = None,
        device: torch.device | str | None = None,
        adapt: bool = True,
    ):
        if mean0.ndim != 2:
            raise ValueError(f"mean0 must be (B, n), got shape {tuple(mean0.shape)}")
        if popsize < 4:
            raise ValueError(f"popsize must be >= 4, got {popsize}")
        if sigma0 <= 0:
            raise ValueError(f"sigma0 must be > 0, got {sigma0}")
        device = torch.device(device) if device is not None else mean0.device
        batch, n = mean0.shape
        self.dim, self.popsize = n, popsize
        self.mean = mean0.detach().to(device=device, dtype=torch.float32).clone()  # (B, n)
        self.sigma = torch.full((batch,), float(sigma0), device=device)  # (B,)
        self.variance = torch.ones(batch, n, device=device)  # diagonal of C, (B, n)
        self.path_sigma = torch.zeros(batch, n, device=device)  # p_sigma
        self.path_c = torch.zeros(batch, n, device=device)  # p_c
        self.generation = 0
        self.adapt = adapt
        ids = torch.arange(batch) if keys is None else keys.cpu()
        self._keys = stream_keys(seed, ids).to(device)
        self._set_constants(n, popsize, device)
        self._z = self._y = None

    def _set_constants(self, n: int, popsize: int, device: torch.device) -> None:
        mu = popsize // 2
        # Hansen's weights; the authors' code uses log(mu + 1) in place of log((lambda + 1) / 2).
        top = math.log((popsize + 1) / 2) if self.adapt else math.log(mu + 1)
        raw = top - torch.log(torch.arange(1, mu + 1, dtype=torch.float64))
        weights = raw / raw.sum()
        self.mu = mu
        self.weights = weights.to(device=device, dtype=torch.float32)  # (mu,)
        mueff = float(1.0 / (weights**2).sum())
        self.mueff = mueff
        self.c_sigma = (mueff + 2) / (n + mueff + 5)
        self.d_sigma = 1 + 2 * max(0.0, math.sqrt((mueff - 1) / (n + 1)) - 1) + self.c_sigma
        # Learning rates for a diagonal covariance: n variances are learnt instead of
        # n^2 covariances, so they can be much larger (pycma's "sep" settings, which
        # refine Ros & Hansen 2008).
        self.c_c = (1 + 1 / n + mueff / n) / (math.sqrt(n) + 1 / n + 2 * mueff / n)
        self.c_1 = 1 / (n + 2 * math.sqrt(n) + mueff / n)
        self.c_mu = min(1 - self.c_1, (0.25 + mueff + 1 / mueff - 2) / (n + 4 * math.sqrt(n) + mueff / 2))
        self.chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n))  # E||N(0, I)||

    def keep(self, index: torch.Tensor) -> None:
        """Continue with the instances at ``index`` (K,) only, e.g. those still searching.

        Each kept instance goes on exactly as it would have: its state and its random
        stream are its own. Call between ``tell`` and the next ``ask``.
        """
        if self._z is not None:
            raise RuntimeError("keep() must come after tell(), before the next ask()")
        for name in ("mean", "sigma", "variance", "path_sigma", "path_c", "_keys"):
            setattr(self, name, getattr(self, name)[index])

    def ask(self) -> torch.Tensor:
        """Sample the next generation: (B, P, n) = mean + sigma * sqrt(C) * z."""
        batch = self.mean.shape[0]
        self._z = keyed_normal(self._keys, self.generation, (self.popsize, self.dim)).to(self.mean.device)
        self._y = self.variance.sqrt()[:, None, :] * self._z  # (B, P, n)
        return self.mean[:, None, :] + self.sigma.view(batch, 1, 1) * self._y

    def tell(self, fitness: torch.Tensor) -> None:
        """Update from the fitness (B, P) of the last ``ask`` (lower is better)."""
        if self._z is None:
            raise RuntimeError("tell() needs a preceding ask()")
        batch = self.mean.shape[0]
        if fitness.shape != (batch, self.popsize):
            raise ValueError(f"fitness must be (B, P) = {(batch, self.popsize)}, got {tuple(fitness.shape)}")
        order = fitness.to(self.mean.device).float().argsort(dim=1)[:, : self.mu]  # (B, mu) best first
        pick = order[:, :, None].expand(-1, -1, self.dim)
        y_best = self._y.gather(1, pick)  # (B, mu, n)
        z_best = self._z.gather(1, pick)
        y_w = torch.einsum("m,bmn->bn", self.weights, y_best)  # (B, n)
        z_w = torch.einsum("m,bmn->bn", self.weights, z_best)

        self.mean = self.mean + self.sigma[:, None] * y_w
        if not self.adapt:  # the authors' evolution: only the mean moves
            self.generation += 1
            self._z = self._y = None
            return
        # Step-size path: C^(-1/2) y_w is z_w for a diagonal C.
        self.path_sigma = (1 - self.c_sigma) * self.path_sigma + math.sqrt(
            self.c_sigma * (2 - self.c_sigma) * self.mueff
        ) * z_w
        norm_ps = self.path_sigma.norm(dim=1)  # (B,)
        correction = math.sqrt(1 - (1 - self.c_sigma) ** (2 * (self.generation + 1)))
        h_sigma = (norm_ps / correction < (1.4 + 2 / (self.dim + 1)) * self.chi_n).float()  # (B,)
        self.path_c = (1 - self.c_c) * self.path_c + h_sigma[:, None] * math.sqrt(
            self.c_c * (2 - self.c_c) * self.mueff
        ) * y_w
        rank_mu = torch.einsum("m,bmn->bn", self.weights, y_best**2)  # (B, n)
        stall = (1 - h_sigma) * self.c_1 * self.c_c * (2 - self.c_c)  # (B,) keeps C's scale when h_sigma=0
        self.variance = (
            (1 - self.c_1 - self.c_mu + stall)[:, None] * self.variance
            + self.c_1 * self.path_c**2
            + self.c_mu * rank_mu
        )
        self.sigma = self.sigma * torch.exp((self.c_sigma / self.d_sigma) * (norm_ps / self.chi_n - 1))
        self.generation += 1
        self._z = self._y = None
