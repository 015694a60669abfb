"""Batched prototype synthesis: every channel of a layer optimised at once.

Paper Sec. 2.1 and 6.2. For each channel c of ``layer``, find a latent code whose
image maximises the channel's centre activation, in two stages run for all
channels together:

1. evolution: one CMA-ES instance per channel (:class:`BatchedCMAES`) searches
   the generator's latent space for a start that makes the unit respond; a channel
   stops evolving as soon as it responds (that is what the stage is for). Channels
   still silent afterwards (activation <= 0) get freshly drawn codes and one more
   evolution (the count is reported);
2. gradient ascent: Adam on all codes at once, loss = minus the sum of every
   channel's own centre score (each image only drives its own channel, so the
   sum's gradient is each channel's own gradient); a channel stops once its score
   has converged.

Stopped channels cost nothing more on a CPU (they leave the batch); on a GPU they stay
in it, frozen, so that the loops never wait for the host. The result is the same.

Early exits (``early_exit=True``, the demo's) are this project's speed rules: a channel
stops evolving at its first responding sample and stops climbing once converged. The
paper authors' code (``early_exit=False``) runs every channel through all generations
and a fixed number of Adam steps; it also starts Adam from the evolution's recombined
mean (``adam_start="mean"``, not the best sample), evolves with a fixed step size
(``evolution="fixed_sigma"``, :class:`~protoviz_core.engine.cmaes.BatchedCMAES` with
``adapt=False``) and maximises the unit after its ReLU (``objective="after_relu"``).

By default (``objective="before_relu"``) both stages maximise the unit's *score*: its
value with the last ReLU on its path left out
(:func:`~protoviz_core.engine.units.unit_reader`). Where the unit responds, score and
activation are equal, so live channels are optimised exactly as on the activation;
where a ReLU has cut the unit to 0 for every image tried, the activation gives the
evolution nothing to rank and Adam a zero gradient, while the score still orders the
images by how close they come and passes a gradient, so silent units are brought
alive. (Lucid's "redirected ReLU" gradient serves the same purpose.) What is reported
and stored is the activation itself.

Everything is a tensor over channels (and samples); forward passes are split into
chunks of at most ``max_batch`` images, which changes memory use, not results.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from protoviz_core.engine.cmaes import BatchedCMAES
from protoviz_core.engine.generators import Generator, make_generator
from protoviz_core.engine.normalization import IMAGENET_NORMALIZE, Normalizer
from protoviz_core.engine.precision import autocast, uses_bfloat16
from protoviz_core.engine.rng import derive_seed, stream_keys
from protoviz_core.engine.units import (
    READ_UNITS,
    centre_activation,
    channel_count,
    check_channels,
    unit_reader,
)

# transform(images, keys, step) -> images: (B, 3, S, S) in [0, 1], int64 (B,) stream keys (one per
# channel: draws must not depend on the batch), the Adam step. E.g. engine.robustness.Robustness.
ImageTransform = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
# monitor(stage, step, values): stage "evolution" | "redraw" | "gradient", values (N,): the best
# score so far in the evolution stages, the current activation in the gradient stage. For progress and timing.
Monitor = Callable[[str, int, torch.Tensor], None]

# Every use of randomness has its own stream, derived from the call's seed and the use's
# name: the start codes must not be the numbers the first CMA-ES generation samples with,
# and re-drawn codes must not repeat the first draw.
STREAMS = ("start", "evolution", "redraw start", "redraw evolution", "transforms")


def stream_seed(seed: int, use: str) -> int:
    """The seed of one use of randomness (one of :data:`STREAMS`) under ``seed``."""
    if use not in STREAMS:
        raise ValueError(f"unknown stream {use!r}; one of {STREAMS}")
    return derive_seed(seed, use)


@dataclass
class Prototypes:
    """One prototype per channel. N = number of channels."""

    # (N, 3, S, S) float in [0, 1] on the 8-bit grid (k / 255) the store keeps, on the CPU
    images: torch.Tensor
    activations: torch.Tensor  # (N,) centre activation of each channel on its own image (exactly that image)
    latents: torch.Tensor  # (N, d) the generator codes
    channels: torch.Tensor  # (N,) int64 channel indices
    dead: torch.Tensor  # (N,) bool: activation still <= 0
    redrawn: torch.Tensor  # (N,) bool: codes re-drawn after a silent evolution stage
    evolution_activations: torch.Tensor  # (N,) best score after the evolution stage (negative: still silent)


OBJECTIVES = ("before_relu", "after_relu")
EVOLUTIONS = ("sep_cma", "fixed_sigma")
ADAM_STARTS = ("best", "mean")
PRECISIONS = ("bfloat16", "float32")


class _Objective:
    """Centre scores and activations of each image's own channel, in chunks of ``max_batch`` images.

    The score is what is maximised: the unit before its ReLU (``before_relu``) or the activation itself.
    """

    def __init__(
        self,
        read: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        generator: Generator,
        normalize: dict,
        max_batch: int,
        device: torch.device,
        use_amp: bool,
        objective: str = "before_relu",
        read_unit: str = "top_left",
    ):
        self.read, self.generator, self.max_batch = read, generator, max_batch
        self.read_unit = read_unit
        self.normalize = Normalizer(normalize, device)
        self.before_relu = objective == "before_relu"
        self.use_amp, self.device = use_amp, device

    def render(self, latents: torch.Tensor, exact: bool = False) -> torch.Tensor:
        """latents (B, d) -> float32 images (B, 3, S, S); ``exact``: without autocast."""
        with autocast(self.device, self.use_amp and not exact):
            return self.generator(latents).float()

    def images_to_units(
        self, images: torch.Tensor, channels: torch.Tensor, exact: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, S, S) in [0, 1], channels (B,) -> float32 (B,) scores and (B,) activations."""
        mixed = self.use_amp and not exact
        normalised = self.normalize(images)
        if mixed:
            normalised = normalised.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, mixed):
            output, before = self.read(normalised)
            activation = centre_activation(output, channels, self.read_unit).float()
            return (
                centre_activation(before, channels, self.read_unit).float()
                if self.before_relu
                else activation
            ), activation

    def evaluate(
        self,
        latents: torch.Tensor,
        channels: torch.Tensor,
        transforms: Sequence[ImageTransform] = (),
        keys: torch.Tensor | None = None,
        step: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """latents (B, d), channels (B,) -> (B,) scores and (B,) activations of their images after
        ``transforms`` (drawn from stream ``keys`` (B,) at ``step``), in one pass that keeps the
        graph (for gradients)."""
        images = self.render(latents)
        for transform in transforms:
            images = transform(images, keys, step)
        return self.images_to_units(images, channels)

    def exact_activations(self, images: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S), channels (B,) -> (B,) activations in float32, without autocast.

        What is reported and decides ``dead``: bfloat16's coarse spacing can flip a unit
        near zero (bench/choices/bf16_scores.py).
        """
        return torch.cat(
            [
                self.images_to_units(
                    images[start : start + self.max_batch],
                    channels[start : start + self.max_batch],
                    exact=True,
                )[1]
                for start in range(0, len(images), self.max_batch)
            ]
        )

    def __call__(self, latents: torch.Tensor, channels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """latents (B, d), channels (B,) -> (B,) scores and (B,) activations, without gradients."""
        scores, activations = [], []
        with torch.no_grad():
            for start in range(0, len(latents), self.max_batch):
                stop = start + self.max_batch
                score, activation = self.evaluate(latents[start:stop], channels[start:stop])
                scores.append(score)
                activations.append(activation)
        return torch.cat(scores), torch.cat(activations)


MEMORY_FRACTION = 0.6  # of the free GPU memory that one pass may use (the rest: fragmentation, other work)
_PROBE_IMAGES = 8


def images_per_pass(free_bytes: int, bytes_per_image: float, fraction: float = MEMORY_FRACTION) -> int:
    """How many images one gradient pass may hold: ``fraction`` of the free memory, at
    least one probe's worth."""
    return max(_PROBE_IMAGES, int(fraction * free_bytes / max(bytes_per_image, 1.0)))


def _fit_to_memory(
    objective: _Objective,
    codes: torch.Tensor,
    channels: torch.Tensor,
    transforms: Sequence[ImageTransform],
    keys: torch.Tensor,
) -> int:
    """Images per pass on a CUDA device, from the peak memory of one probe gradient pass of a few images."""
    device = objective.device
    probe = codes[:_PROBE_IMAGES].detach().clone().requires_grad_(True)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    scores, _ = objective.evaluate(probe, channels[:_PROBE_IMAGES], transforms, keys[:_PROBE_IMAGES])
    (-scores.sum()).backward()
    per_image = (torch.cuda.max_memory_allocated(device) - before) / len(probe)
    del probe, scores
    free, _ = torch.cuda.mem_get_info(device)
    # PyTorch's cache (reserved but unused) is free to this process too; without it the pass
    # size would depend on what earlier shards of the same process left cached.
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return images_per_pass(free, per_image)


def _stopped_leave_the_batch(device: torch.device) -> bool:
    """On a CPU, stopped channels leave the batch (its cost is per image); on a GPU they stay, frozen."""
    return device.type == "cpu"


def _evolve(
    objective: _Objective,
    start: torch.Tensor,
    channels: torch.Tensor,
    *,
    sigma: float,
    popsize: int,
    steps: int,
    seed: int,
    monitor: Monitor | None,
    stage: str = "evolution",
    early_exit: bool = True,
    adapt: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CMA-ES from ``start`` (N, d) for each channel; the best code seen, its score, and the final mean.

    With ``early_exit``, a channel whose best score is above zero has what the evolution
    is for (a start that makes the unit respond, paper Sec. 2.1) and stops evolving. On a
    CPU it leaves the batch, so its samples cost nothing more; on a GPU, where a smaller
    batch saves little and deciding would synchronise with the host every generation, it
    stays in the batch but its best and mean are frozen. Both give the same result.
    Without it every channel runs all ``steps`` generations and its best is the best of all.

    Returns:
        (N, d) best codes, (N,) their scores, (N, d) each channel's recombined mean when it stopped.
    """
    device = start.device
    n_channels = len(channels)
    channels = channels.to(device)
    es = BatchedCMAES(start, sigma, popsize, seed=seed, keys=channels, device=device, adapt=adapt)
    best_codes = start.clone()
    means = start.clone()
    best, _ = objective(start, channels)  # (N,)
    shrink = early_exit and _stopped_leave_the_batch(device)
    active = torch.arange(n_channels, device=device)  # channels still in ``es``, in its order
    for step in range(1, steps + 1):
        if shrink:
            searching = best[active] <= 0
            if not bool(searching.all()):
                kept = searching.nonzero().flatten()
                es.keep(kept)
                active = active[kept]
        if len(active):
            samples = es.ask()  # (A, P, d)
            scores, _ = objective(
                samples.reshape(len(active) * popsize, -1), channels[active].repeat_interleave(popsize)
            )
            scores = scores.view(len(active), popsize)
            searching = best[active] <= 0 if early_exit else torch.ones_like(best[active], dtype=torch.bool)
            es.tell(-scores)  # CMA-ES minimises
            means[active] = torch.where(searching[:, None], es.mean, means[active])
            top, which = scores.max(dim=1)  # (A,)
            # torch.where, not boolean indexing: no host-device synchronisation inside the loop.
            improved = (top > best[active]) & searching
            best[active] = torch.where(improved, top, best[active])
            chosen = samples[torch.arange(len(active), device=device), which]
            best_codes[active] = torch.where(improved[:, None], chosen, best_codes[active])
        if monitor is not None:
            monitor(stage, step, best.clone())  # a copy: ``best`` changes in place
    return best_codes, best, means


ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults
ADAM_EPS = 1e-8
CONVERGED_STEPS = 10  # a channel whose score rose by less than CONVERGED_GAIN over this many steps
CONVERGED_GAIN = 1e-3  # (relative) has converged and stops


def _ascend(
    objective: _Objective,
    codes: torch.Tensor,
    channels: torch.Tensor,
    *,
    steps: int,
    lr: float,
    transforms: Sequence[ImageTransform],
    keys: torch.Tensor,
    monitor: Monitor | None,
    early_exit: bool = True,
) -> torch.Tensor:
    """Adam on every channel's code at once (loss = -sum of the centre scores), ``steps`` steps.

    Each step scores the images after ``transforms``, drawn from each channel's stream key
    (``keys``, (N,)) and the step; with transforms no channel stops early (its score is noisy).

    Adam's update is torch.optim.Adam's, written out per row so that each channel can
    stop on its own: with ``early_exit`` a channel stops once its score has risen by less
    than :data:`CONVERGED_GAIN` (relative) over the last :data:`CONVERGED_STEPS` steps. On
    a CPU it leaves the batch; on a GPU it stays and its code is frozen (no host
    synchronisation inside the loop). Both give the same result.
    """
    device = codes.device
    count = len(codes)
    codes = codes.detach().clone()
    # Under random transforms a step's score is one random draw: a gain test on it would stop a
    # climbing channel on an unlucky draw (with maco on the demo's last checkpoint, 30 and 60
    # allowed steps gave the same prototypes: every channel had stopped), so every channel runs
    # all ``steps``.
    early_exit = early_exit and not transforms
    first, second = torch.zeros_like(codes), torch.zeros_like(codes)  # Adam's moments
    beta1, beta2 = ADAM_BETAS
    history = torch.full((CONVERGED_STEPS, count), -float("inf"), device=device)  # scores of the last steps
    running = torch.ones(count, dtype=torch.bool, device=device)
    activations = torch.zeros(count, device=device)
    shrink = early_exit and _stopped_leave_the_batch(device)
    for step in range(1, steps + 1):
        rows = running.nonzero().flatten() if shrink else torch.arange(count, device=device)
        if len(rows):
            x = codes[rows].requires_grad_(True)
            scores, current = [], []
            for start in range(0, len(rows), objective.max_batch):
                stop = start + objective.max_batch
                chunk = rows[start:stop]
                score, activation = objective.evaluate(
                    x[start:stop], channels[chunk], transforms, keys[chunk], step
                )
                (-score.sum()).backward()  # chunks accumulate into x.grad: same as one big batch
                scores.append(score.detach())
                current.append(activation.detach())
            score, gradient = torch.cat(scores), x.grad
            activations[rows] = torch.cat(current)
            # Converged: less than CONVERGED_GAIN relative gain over CONVERGED_STEPS steps
            # (score before this update).
            gain = score - history[(step - 1) % CONVERGED_STEPS, rows]
            still = (
                running[rows] & ~(gain <= CONVERGED_GAIN * score.abs().clamp(min=1e-6))
                if early_exit
                else running[rows]
            )
            history[(step - 1) % CONVERGED_STEPS, rows] = score
            first[rows] = beta1 * first[rows] + (1 - beta1) * gradient
            second[rows] = beta2 * second[rows] + (1 - beta2) * gradient.square()
            denominator = (second[rows].sqrt() / math.sqrt(1 - beta2**step)).add_(ADAM_EPS)
            update = (lr / (1 - beta1**step)) * first[rows] / denominator
            codes[rows] = torch.where(still[:, None], x.detach() - update, x.detach())
            running[rows] = still
        if monitor is not None:
            monitor("gradient", step, activations.clone())  # before this step's update; a copy
    return codes


def synthesize(
    model: nn.Module,
    layer: str,
    channels: Sequence[int] | torch.Tensor | None = None,
    *,
    generator: str | Generator,
    image_size: int,
    cma_steps: int,
    cma_popsize: int,
    cma_sigma: float,
    adam_steps: int,
    adam_lr: float,
    seed: int,
    start_seed: int | None = None,
    device: torch.device | str = "cpu",
    max_batch: int | None = None,
    normalize: dict | None = None,
    transforms: Sequence[ImageTransform] = (),
    redraw_dead: bool = True,
    early_exit: bool = True,
    evolution: str = "sep_cma",
    adam_start: str = "best",
    objective: str = "before_relu",
    precision: str = "bfloat16",
    read_unit: str = "top_left",
    generator_weights: str | None = None,
    monitor: Monitor | None = None,
) -> Prototypes:
    """Synthesise one prototype per channel of ``layer``, all channels at once.

    Args:
        model: the network, moved to ``device``; run in eval mode, its parameters and
            their ``requires_grad`` flags are left as they were.
        layer: dotted module name (``layer3``, ``layer3.1.conv2``, ``features.10``).
        channels: channel indices; ``None`` = all channels of the layer.
        generator: ``deepsim_fc6``, ``fourier``, ``pixel`` or a :class:`Generator`.
        image_size: side S of the images fed to the model.
        cma_steps, cma_popsize, cma_sigma: the evolution stage (generations,
            samples per channel and generation, initial step size in latent units).
        adam_steps, adam_lr: the gradient stage.
        seed: channel c's random streams are functions of (seed, c) only, so a
            channel gets the same prototype alone or in any batch. Start codes,
            evolution samples and re-draws each use their own stream
            (:func:`stream_seed`).
        start_seed: the start codes' seed instead of ``seed`` (e.g. the same at every
            checkpoint while the search's noise differs).
        device: where to run (the caller resolves it). On CUDA: the search under bfloat16
            autocast (``precision="bfloat16"``), channels_last; on the CPU: float32. The
            images and the activations returned are computed in float32 on either.
        max_batch: most images per forward pass (channels x samples). Default: on a
            GPU, as many as fit in :data:`MEMORY_FRACTION` of the free memory (measured
            with a probe pass); on the CPU, all at once.
        normalize: {"mean": 3 floats, "std": 3 floats} the network was trained with;
            default ImageNet's (lightly's SimCLR default).
        transforms: ``transform(images, keys, step)`` functions applied during the gradient
            stage only, for robustness (:class:`~protoviz_core.engine.robustness.Robustness`);
            their random draws come from each channel's own stream (``"transforms"``).
        redraw_dead: give silent channels fresh codes and a second evolution.
        early_exit: stop a channel's evolution at its first response and its ascent once
            converged (this project's speed rules); False: every generation and every
            Adam step, as the paper authors' code.
        evolution: ``sep_cma`` (step size and diagonal covariance adapted) or
            ``fixed_sigma`` (the authors' code: only the mean moves).
        adam_start: Adam starts from each channel's ``best`` sample or its evolution's
            recombined ``mean`` (the authors' code).
        objective: ``before_relu`` (the score; silent units brought alive) or
            ``after_relu`` (the activation itself, the authors' code).
        precision: the GPU search's ``bfloat16`` autocast, or ``float32`` throughout.
        read_unit: which unit of the channel's map is maximised: ``top_left`` (the authors'
            code) or ``centred`` (:func:`~protoviz_core.engine.units.centre_window`).
        generator_weights: weights file for ``deepsim_fc6`` when given by name.
        monitor: called after every step with the stage, step and activations (N,).

    Returns:
        :class:`Prototypes`, tensors on the CPU, in the order of ``channels``.

    Raises:
        ValueError: unknown layer (lists valid names), channel out of range, bad sizes.

    Examples:
        Every channel of a small convolutional layer, in pixel space:

        >>> from collections import OrderedDict
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), relu=nn.ReLU()))
        >>> found = synthesize(net, "relu", generator="pixel", image_size=16, cma_steps=2, cma_popsize=6,
        ...                    cma_sigma=1.0, adam_steps=5, adam_lr=0.1, seed=0)
        >>> found.images.shape, found.channels.tolist()
        (torch.Size([4, 3, 16, 16]), [0, 1, 2, 3])
        >>> bool((found.activations > 0).all()), bool(found.dead.any())
        (True, False)
    """
    if min(cma_steps, adam_steps) < 0 or cma_popsize < 4 or cma_sigma <= 0 or adam_lr <= 0:
        raise ValueError("need cma_steps, adam_steps >= 0, cma_popsize >= 4, cma_sigma > 0, adam_lr > 0")
    for name, value, allowed in (
        ("objective", objective, OBJECTIVES),
        ("evolution", evolution, EVOLUTIONS),
        ("adam_start", adam_start, ADAM_STARTS),
        ("precision", precision, PRECISIONS),
        ("read_unit", read_unit, READ_UNITS),
    ):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    device = torch.device(device)
    use_amp = uses_bfloat16(device, precision)
    was_training = model.training
    model.eval().to(device)
    if use_amp:
        model.to(memory_format=torch.channels_last)
    prior = make_generator(generator, image_size, generator_weights).to(device).eval()
    trainable = [p.requires_grad for p in model.parameters()]  # restored at the end
    for module in (model, prior):
        module.requires_grad_(False)  # gradients flow to the codes only

    channel_index = check_channels(channels, channel_count(model, layer, image_size), layer)
    on_device = channel_index.to(device)
    try:
        with unit_reader(model, layer) as read:
            scorer = _Objective(
                read,
                prior,
                normalize or IMAGENET_NORMALIZE,
                max_batch or 1 << 62,
                device,
                use_amp,
                objective,
                read_unit,
            )
            transform_keys = stream_keys(stream_seed(seed, "transforms"), channel_index).to(device)
            start = prior.sample(
                stream_keys(stream_seed(seed if start_seed is None else start_seed, "start"), channel_index),
                step=0,
            ).to(device)
            if max_batch is None and device.type == "cuda":
                scorer.max_batch = _fit_to_memory(scorer, start, on_device, transforms, transform_keys)
            search = dict(
                sigma=cma_sigma,
                popsize=cma_popsize,
                steps=cma_steps,
                monitor=monitor,
                early_exit=early_exit,
                adapt=evolution == "sep_cma",
            )
            best_codes, evolved, means = _evolve(
                scorer, start, channel_index, seed=stream_seed(seed, "evolution"), **search
            )
            codes = means if adam_start == "mean" else best_codes
            # On the host: ``channel_index`` is, and a device index cannot index a host tensor.
            silent = (
                (evolved <= 0).nonzero().flatten().cpu() if redraw_dead else torch.zeros(0, dtype=torch.int64)
            )
            if len(silent):
                codes, evolved = _redraw(
                    scorer,
                    prior,
                    codes,
                    evolved,
                    silent,
                    channel_index,
                    seed=seed,
                    adam_start=adam_start,
                    **search,
                )
            codes = _ascend(
                scorer,
                codes,
                on_device,
                steps=adam_steps,
                lr=adam_lr,
                transforms=transforms,
                keys=transform_keys,
                monitor=monitor,
                early_exit=early_exit,
            )
            with torch.no_grad():
                images = torch.cat(
                    [
                        scorer.render(codes[i : i + scorer.max_batch], exact=True)
                        for i in range(0, len(codes), scorer.max_batch)
                    ]
                )
                # What is reported is what the store keeps: the image on its 8-bit grid.
                images = images.clamp(0, 1).mul(255).round().div(255)
                final = scorer.exact_activations(images, on_device)
    finally:
        model.train(was_training)
        for parameter, flag in zip(model.parameters(), trainable):
            parameter.requires_grad_(flag)
    return Prototypes(
        images=images.cpu(),
        activations=final.cpu(),
        latents=codes.cpu(),
        channels=channel_index,
        dead=(final <= 0).cpu(),
        redrawn=_mask(silent, len(channel_index)),
        evolution_activations=evolved.cpu(),
    )


def _mask(index: torch.Tensor, length: int) -> torch.Tensor:
    mask = torch.zeros(length, dtype=torch.bool)
    mask[index] = True
    return mask


def _redraw(
    objective: _Objective,
    prior: Generator,
    codes: torch.Tensor,
    evolved: torch.Tensor,
    silent: torch.Tensor,
    channels: torch.Tensor,
    *,
    seed: int,
    adam_start: str,
    **search,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh codes and a second evolution for the channels at ``silent`` (indices into N); each
    channel keeps the better of its two evolutions.

    Index assignment (``codes[silent] = ...``) writes into ``codes`` itself; masked
    copies would silently discard the new codes.
    """
    fresh = prior.sample(stream_keys(stream_seed(seed, "redraw start"), channels[silent]), step=0).to(
        codes.device
    )
    best_codes, new_best, means = _evolve(
        objective,
        fresh,
        channels[silent],
        seed=stream_seed(seed, "redraw evolution"),
        stage="redraw",
        **search,
    )
    new_codes = means if adam_start == "mean" else best_codes
    # Keep whichever evolution came closer: with scores below zero, the first may have.
    better = new_best >= evolved[silent]  # a tie goes to the fresh draw
    codes, evolved = codes.clone(), evolved.clone()
    codes[silent] = torch.where(better[:, None], new_codes, codes[silent])
    evolved[silent] = torch.where(better, new_best, evolved[silent])
    return codes, evolved
