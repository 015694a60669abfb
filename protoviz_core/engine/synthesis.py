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

How the search runs (generator, schedule, objective, ...) is one value, a
:class:`Procedure`; :func:`synthesize` applies it to a model's layer:
``synthesize(model, layer, channels, procedure, seed=...)``.

Stopped channels cost nothing more on a CPU (they leave the batch); on a GPU they stay
in it, frozen, so that the loops never wait for the host (:class:`_Batch`). The result
is the same.

Early exits (``early_exit=True``, the demo's) are this project's speed rules: a channel
stops evolving at its first responding sample and stops climbing once converged. The
paper authors' code (``early_exit=False``, :meth:`Procedure.paper`) runs every channel
through all generations and a fixed number of Adam steps; it also starts Adam from the
evolution's recombined mean (``adam_start="mean"``, not the best sample), evolves with a
fixed step size (``evolution="fixed_sigma"``, :class:`~protoviz_core.engine.cmaes.BatchedCMAES`
with ``adapt=False``) and maximises the unit after its ReLU (``objective="after_relu"``).

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

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from protoviz_core.engine.cmaes import BatchedCMAES
from protoviz_core.engine.generators import Generator, make_generator
from protoviz_core.engine.normalization import IMAGENET_NORMALIZE, Normalizer
from protoviz_core.engine.precision import autocast, uses_bfloat16
from protoviz_core.engine.rng import derive_seed, stream_keys
from protoviz_core.engine.robustness import Robustness
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
RESIZES = ("antialias", "legacy")

# The keys of params.yaml's ``extract`` section that are Procedure fields of the same name
# (``robustness`` becomes ``transforms``; ``read_unit`` is a top-level param, read when given).
_EXTRACT_FIELDS = (
    "generator",
    "generator_weights",
    "resize",
    "cma_steps",
    "cma_popsize",
    "cma_sigma",
    "adam_steps",
    "adam_lr",
    "early_exit",
    "evolution",
    "adam_start",
    "objective",
    "precision",
    "read_unit",
    "redraw_dead",
    "max_batch",
)


@dataclass(frozen=True, kw_only=True)
class Procedure:
    """How prototypes are searched for: everything but the model, layer, channels, seed and device.

    The defaults of the optional fields are this project's procedure; :meth:`paper` is the
    paper authors' code, :meth:`demo` params.yaml's, :meth:`from_extract` any ``extract``
    section of a params file.

    Attributes:
        generator: ``deepsim_fc6``, ``fourier``, ``maco``, ``decoder``, ``pixel`` or a :class:`Generator`.
        image_size: side S of the images fed to the model.
        cma_steps, cma_popsize, cma_sigma: the evolution stage (generations, samples per
            channel and generation, initial step size in latent units).
        adam_steps, adam_lr: the gradient stage.
        generator_weights: the weights file of a generator given by name (``deepsim_fc6``;
            ``"random"`` for an untrained one), ``maco``'s spectrum, ``decoder``'s prior.
        resize: ``deepsim_fc6`` by name: ``antialias`` its 256 px -> S resize, or ``legacy``
            (without, the authors' code).
        early_exit: stop a channel's evolution at its first response and its ascent once
            converged (this project's speed rules); False: every generation and every
            Adam step, as the paper authors' code.
        evolution: ``sep_cma`` (step size and diagonal covariance adapted) or
            ``fixed_sigma`` (the authors' code: only the mean moves).
        adam_start: Adam starts from each channel's ``best`` sample or its evolution's
            recombined ``mean`` (the authors' code).
        objective: what both stages maximise: ``before_relu`` (the score; silent units
            brought alive) or ``after_relu`` (the activation itself, the authors' code).
        precision: the GPU search's ``bfloat16`` autocast, or ``float32`` throughout.
        read_unit: which unit of the channel's map is maximised: ``top_left`` (the authors'
            code) or ``centred`` (:func:`~protoviz_core.engine.units.centre_window`).
        redraw_dead: give silent channels fresh codes and a second evolution.
        transforms: ``transform(images, keys, step)`` functions applied during the gradient
            stage only, for robustness (:class:`~protoviz_core.engine.robustness.Robustness`);
            their random draws come from each channel's own stream (``"transforms"``).
        normalize: {"mean": 3 floats, "std": 3 floats} the network was trained with;
            None: ImageNet's (lightly's SimCLR default).
        max_batch: most images per forward pass (channels x samples); changes memory, not
            results. None: on a GPU, as many as fit in :data:`MEMORY_FRACTION` of the free
            memory (measured with a probe pass); on the CPU, all at once.

    Raises:
        ValueError: a size out of range or an option not among its choices.
    """

    generator: str | Generator
    image_size: int
    cma_steps: int
    cma_popsize: int
    cma_sigma: float
    adam_steps: int
    adam_lr: float
    generator_weights: str | None = None
    resize: str = "antialias"
    early_exit: bool = True
    evolution: str = "sep_cma"
    adam_start: str = "best"
    objective: str = "before_relu"
    precision: str = "bfloat16"
    read_unit: str = "top_left"
    redraw_dead: bool = True
    transforms: Sequence[ImageTransform] = ()
    normalize: Mapping[str, Sequence[float]] | None = None
    max_batch: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "transforms", tuple(self.transforms))  # a list would make it mutable
        if (
            min(self.cma_steps, self.adam_steps) < 0
            or self.cma_popsize < 4
            or self.cma_sigma <= 0
            or self.adam_lr <= 0
        ):
            raise ValueError("need cma_steps, adam_steps >= 0, cma_popsize >= 4, cma_sigma > 0, adam_lr > 0")
        if self.image_size < 1 or (self.max_batch is not None and self.max_batch < 1):
            raise ValueError("need image_size >= 1 and max_batch >= 1 (or None)")
        for name, allowed in (
            ("objective", OBJECTIVES),
            ("evolution", EVOLUTIONS),
            ("adam_start", ADAM_STARTS),
            ("precision", PRECISIONS),
            ("read_unit", READ_UNITS),
            ("resize", RESIZES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

    @classmethod
    def paper(cls, image_size: int, **changes: Any) -> Procedure:
        """The paper authors' code (configs/paper.yaml): DeePSiM fc6 (its weights file in
        ~/.cache/protoviz), 20 generations of 30 samples at a fixed step size 2, then 50
        Adam steps at 0.01 from the evolution's mean, on the unit after its ReLU, in
        float32, with no early exits and no re-draws. ``changes``: other field values."""
        return cls(
            **{
                "generator": "deepsim_fc6",
                "generator_weights": "~/.cache/protoviz/upconvGAN_fc6.pt",
                "resize": "legacy",
                "image_size": image_size,
                "cma_steps": 20,
                "cma_popsize": 30,
                "cma_sigma": 2.0,
                "adam_steps": 50,
                "adam_lr": 0.01,
                "early_exit": False,
                "evolution": "fixed_sigma",
                "adam_start": "mean",
                "objective": "after_relu",
                "precision": "float32",
                "redraw_dead": False,
                "max_batch": 8192,
                **changes,
            }
        )

    @classmethod
    def demo(cls, image_size: int, **changes: Any) -> Procedure:
        """The demo's (params.yaml): the decoder prior the decoder stage trains (out/decoder.pt)
        under transformation robustness, 5 generations of 12 samples at step size 1, then 40
        Adam steps at 0.1, with this project's choices (the defaults). ``changes``: other
        field values."""
        return cls(
            **{
                "generator": "decoder",
                "generator_weights": "out/decoder.pt",
                "image_size": image_size,
                "cma_steps": 5,
                "cma_popsize": 12,
                "cma_sigma": 1.0,
                "adam_steps": 40,
                "adam_lr": 0.1,
                "transforms": (Robustness(),),
                **changes,
            }
        )

    @classmethod
    def from_extract(cls, extract: Mapping[str, Any], image_size: int, **changes: Any) -> Procedure:
        """The procedure of a params file's ``extract`` section (a mapping of its keys, as
        written or as ``ExtractParams.model_dump()`` gives them; keys that are not about the
        search, such as ``layers``, are ignored): the same names, except ``robustness: true``,
        which is ``transforms=(Robustness(),)``. ``changes``: other field values (a
        :class:`Generator` already loaded, the network's ``normalize``, ...)."""
        fields = {name: extract[name] for name in _EXTRACT_FIELDS if name in extract}
        if extract.get("robustness"):
            fields["transforms"] = (Robustness(),)
        return cls(image_size=image_size, **{**fields, **changes})


@dataclass(frozen=True, eq=False)
class _Scorer:
    """Centre scores and activations of each image's own channel, in chunks of ``max_batch`` images.

    The score is what is maximised: the unit before its ReLU (``before_relu``) or the activation itself.
    """

    read: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # images -> (output, before its ReLU)
    generator: Generator
    normalize: Normalizer
    device: torch.device
    use_amp: bool  # the search under bfloat16 autocast
    before_relu: bool
    read_unit: str
    max_batch: int = 1 << 62

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

    def climb(
        self,
        latents: torch.Tensor,
        channels: torch.Tensor,
        transforms: Sequence[ImageTransform],
        keys: torch.Tensor,
        step: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One gradient pass: latents (B, d), a leaf that requires grad, channels (B,), keys (B,) ->
        detached (B,) scores and (B,) activations; the gradient of -sum(scores) is in ``latents.grad``."""
        scores, activations = [], []
        for start in range(0, len(latents), self.max_batch):
            stop = start + self.max_batch
            score, activation = self.evaluate(
                latents[start:stop], channels[start:stop], transforms, keys[start:stop], step
            )
            (-score.sum()).backward()  # chunks accumulate into latents.grad: same as one big batch
            scores.append(score.detach())
            activations.append(activation.detach())
        return torch.cat(scores), torch.cat(activations)

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
    scorer: _Scorer,
    codes: torch.Tensor,
    channels: torch.Tensor,
    transforms: Sequence[ImageTransform],
    keys: torch.Tensor,
) -> int:
    """Images per pass on a CUDA device, from the peak memory of one probe gradient pass of a few images."""
    device = scorer.device
    probe = codes[:_PROBE_IMAGES].detach().clone().requires_grad_(True)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    scores, _ = scorer.evaluate(probe, channels[:_PROBE_IMAGES], transforms, keys[:_PROBE_IMAGES])
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


class _Batch:
    """The channels (indices into N) that go through the next step of a loop, with stopped ones
    leaving it or staying in it, frozen.

    On a CPU (with early exits) a stopped channel leaves the batch: a pass costs per image.
    On a GPU it stays: a smaller batch saves little there, and deciding who leaves would
    synchronise with the host every step; the loop freezes it instead (``torch.where`` on
    its running flag). Both give the same result.
    """

    def __init__(self, count: int, device: torch.device, early_exit: bool):
        self.rows = torch.arange(count, device=device)  # (R,) the channels in the batch
        self.leave = early_exit and _stopped_leave_the_batch(device)

    def drop_stopped(self, running: torch.Tensor) -> torch.Tensor | None:
        """running (N,) bool -> the positions (K,) within the last ``rows`` that stay, when some
        channel has just left (None: none has). A stopped channel never runs again."""
        if not self.leave:
            return None
        staying = running[self.rows]
        if bool(staying.all()):
            return None
        kept = staying.nonzero().flatten()
        self.rows = self.rows[kept]
        return kept


def _evolve(
    scorer: _Scorer,
    start: torch.Tensor,
    channels: torch.Tensor,
    procedure: Procedure,
    *,
    seed: int,
    monitor: Monitor | None,
    stage: str = "evolution",
) -> tuple[torch.Tensor, torch.Tensor]:
    """CMA-ES from ``start`` (N, d) for each channel (N,); the codes Adam starts from and the best scores.

    With ``early_exit``, a channel whose best score is above zero has what the evolution
    is for (a start that makes the unit respond, paper Sec. 2.1) and stops evolving
    (:class:`_Batch`). Without it every channel runs all ``cma_steps`` generations and its
    best is the best of all.

    Returns:
        (N, d) each channel's best code, or with ``adam_start="mean"`` its recombined mean
        when it stopped; (N,) the best scores.
    """
    device, popsize, early_exit = start.device, procedure.cma_popsize, procedure.early_exit
    channels = channels.to(device)
    es = BatchedCMAES(
        start,
        procedure.cma_sigma,
        popsize,
        seed=seed,
        keys=channels,
        device=device,
        adapt=procedure.evolution == "sep_cma",
    )
    best_codes, means = start.clone(), start.clone()
    best, _ = scorer(start, channels)  # (N,)
    batch = _Batch(len(channels), device, early_exit)
    for step in range(1, procedure.cma_steps + 1):
        kept = batch.drop_stopped(best <= 0)
        if kept is not None:
            es.keep(kept)
        active = batch.rows  # (A,) the channels in ``es``, in its order
        if len(active):
            samples = es.ask()  # (A, P, d)
            scores, _ = scorer(
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
    return (means if procedure.adam_start == "mean" else best_codes), best


def _redraw(
    scorer: _Scorer,
    codes: torch.Tensor,
    evolved: torch.Tensor,
    channels: torch.Tensor,
    procedure: Procedure,
    *,
    seed: int,
    monitor: Monitor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """With ``redraw_dead``, fresh codes and a second evolution for the channels whose best
    score ``evolved`` (N,) is <= 0; each channel keeps the better of its two evolutions.

    Returns:
        codes (N, d), best scores (N,), and the indices into N of the re-drawn channels, on the host.
    """
    # On the host: ``channels`` is, and a device index cannot index a host tensor.
    silent = (
        (evolved <= 0).nonzero().flatten().cpu()
        if procedure.redraw_dead
        else torch.zeros(0, dtype=torch.int64)
    )
    if not len(silent):
        return codes, evolved, silent
    fresh = scorer.generator.sample(stream_keys(stream_seed(seed, "redraw start"), channels[silent]), step=0)
    new_codes, new_best = _evolve(
        scorer,
        fresh.to(codes.device),
        channels[silent],
        procedure,
        seed=stream_seed(seed, "redraw evolution"),
        monitor=monitor,
        stage="redraw",
    )
    # Keep whichever evolution came closer: with scores below zero, the first may have.
    better = new_best >= evolved[silent]  # a tie goes to the fresh draw
    # Index assignment writes into the copies themselves; masked copies would silently
    # discard the new codes.
    codes, evolved = codes.clone(), evolved.clone()
    codes[silent] = torch.where(better[:, None], new_codes, codes[silent])
    evolved[silent] = torch.where(better, new_best, evolved[silent])
    return codes, evolved, silent


ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults
ADAM_EPS = 1e-8
CONVERGED_STEPS = 10  # a channel whose score rose by less than CONVERGED_GAIN over this many steps
CONVERGED_GAIN = 1e-3  # (relative) has converged and stops


class _Adam:
    """Adam on the codes (N, d), each channel's row on its own, and the rule that stops a row.

    The update is torch.optim.Adam's, written out per row so that each channel can stop on
    its own: with ``stop_when_converged`` a channel stops once its score has risen by less
    than :data:`CONVERGED_GAIN` (relative) over the last :data:`CONVERGED_STEPS` steps; its
    code is frozen from then on.
    """

    def __init__(self, codes: torch.Tensor, lr: float, stop_when_converged: bool):
        count = len(codes)
        self.codes = codes.detach().clone()  # (N, d)
        self.lr, self.stop_when_converged = lr, stop_when_converged
        self.first, self.second = torch.zeros_like(self.codes), torch.zeros_like(self.codes)  # the moments
        # (CONVERGED_STEPS, N) the scores of the last steps, a ring buffer over the steps
        self.history = torch.full((CONVERGED_STEPS, count), -float("inf"), device=codes.device)
        self.running = torch.ones(count, dtype=torch.bool, device=codes.device)  # (N,) not yet stopped

    def step(self, step: int, rows: torch.Tensor, x: torch.Tensor, score: torch.Tensor) -> None:
        """Adam step ``step`` (from 1) of the codes at ``rows`` (R,): x (R, d) those codes with
        ``x.grad`` the gradient of -sum(score), score (R,) their scores before this update."""
        beta1, beta2 = ADAM_BETAS
        gradient, ring = x.grad, (step - 1) % CONVERGED_STEPS
        gain = score - self.history[ring, rows]  # over the last CONVERGED_STEPS steps
        still = self.running[rows]
        if self.stop_when_converged:
            still = still & ~(gain <= CONVERGED_GAIN * score.abs().clamp(min=1e-6))
        self.history[ring, rows] = score
        self.first[rows] = beta1 * self.first[rows] + (1 - beta1) * gradient
        self.second[rows] = beta2 * self.second[rows] + (1 - beta2) * gradient.square()
        denominator = (self.second[rows].sqrt() / math.sqrt(1 - beta2**step)).add_(ADAM_EPS)
        update = (self.lr / (1 - beta1**step)) * self.first[rows] / denominator
        self.codes[rows] = torch.where(still[:, None], x.detach() - update, x.detach())
        self.running[rows] = still


def _ascend(
    scorer: _Scorer,
    codes: torch.Tensor,
    channels: torch.Tensor,
    keys: torch.Tensor,
    procedure: Procedure,
    monitor: Monitor | None,
) -> torch.Tensor:
    """Adam on every channel's code (N, d) at once (loss = -sum of the centre scores of
    ``channels`` (N,)), ``adam_steps`` steps; the final codes (N, d).

    Each step scores the images after ``transforms``, drawn from each channel's stream key
    (``keys``, (N,)) and the step. With ``early_exit`` a channel stops once converged
    (:class:`_Adam`), leaving the batch or frozen in it (:class:`_Batch`).
    """
    # Under random transforms a step's score is one random draw: a gain test on it would stop a
    # climbing channel on an unlucky draw (with maco on the demo's last checkpoint, 30 and 60
    # allowed steps gave the same prototypes: every channel had stopped), so every channel runs
    # all ``adam_steps``.
    early_exit = procedure.early_exit and not procedure.transforms
    adam = _Adam(codes, procedure.adam_lr, stop_when_converged=early_exit)
    batch = _Batch(len(codes), codes.device, early_exit)
    activations = torch.zeros(len(codes), device=codes.device)
    for step in range(1, procedure.adam_steps + 1):
        batch.drop_stopped(adam.running)
        rows = batch.rows
        if len(rows):
            x = adam.codes[rows].requires_grad_(True)
            score, current = scorer.climb(x, channels[rows], procedure.transforms, keys[rows], step)
            activations[rows] = current
            adam.step(step, rows, x, score)
        if monitor is not None:
            monitor("gradient", step, activations.clone())  # before this step's update; a copy
    return adam.codes


def synthesize(
    model: nn.Module,
    layer: str,
    channels: Sequence[int] | torch.Tensor | None,
    procedure: Procedure,
    *,
    seed: int,
    start_seed: int | None = None,
    device: torch.device | str = "cpu",
    monitor: Monitor | None = None,
) -> Prototypes:
    """Synthesise one prototype per channel of ``layer``, all channels at once, by ``procedure``.

    Args:
        model: the network, moved to ``device``; run in eval mode, its parameters and
            their ``requires_grad`` flags are left as they were.
        layer: dotted module name (``layer3``, ``layer3.1.conv2``, ``features.10``).
        channels: channel indices; ``None`` = all channels of the layer.
        procedure: how to search (generator, schedule, objective, ...): a :class:`Procedure`.
        seed: channel c's random streams are functions of (seed, c) only, so a
            channel gets the same prototype alone or in any batch. Start codes,
            evolution samples, re-draws and transforms each use their own stream
            (:func:`stream_seed`).
        start_seed: the start codes' seed instead of ``seed`` (e.g. the same at every
            checkpoint while the search's noise differs).
        device: where to run (the caller resolves it). On CUDA: the search under bfloat16
            autocast (``procedure.precision="bfloat16"``), channels_last; on the CPU: float32.
            The images and the activations returned are computed in float32 on either.
        monitor: called after every step with the stage, step and values (N,) (:data:`Monitor`).

    Returns:
        :class:`Prototypes`, tensors on the CPU, in the order of ``channels``.

    Raises:
        ValueError: unknown layer (lists valid names), channel out of range.

    Examples:
        Every channel of a small convolutional layer, in pixel space:

        >>> from collections import OrderedDict
        >>> import torch
        >>> from torch import nn
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), relu=nn.ReLU()))
        >>> procedure = Procedure(generator="pixel", image_size=16, cma_steps=2, cma_popsize=6,
        ...                       cma_sigma=1.0, adam_steps=5, adam_lr=0.1)
        >>> found = synthesize(net, "relu", None, procedure, seed=0)
        >>> found.images.shape, found.channels.tolist()
        (torch.Size([4, 3, 16, 16]), [0, 1, 2, 3])
        >>> bool((found.activations > 0).all()), bool(found.dead.any())
        (True, False)
    """
    device = torch.device(device)
    with _searching(model, device, uses_bfloat16(device, procedure.precision)):
        prior = _prior(procedure, device)
        index = check_channels(channels, channel_count(model, layer, procedure.image_size), layer)  # (N,)
        on_device = index.to(device)
        with unit_reader(model, layer) as read:
            scorer, start, keys = _setup(read, prior, procedure, index, seed, start_seed, device)
            evolution = stream_seed(seed, "evolution")
            codes, evolved = _evolve(scorer, start, index, procedure, seed=evolution, monitor=monitor)
            codes, evolved, redrawn = _redraw(
                scorer, codes, evolved, index, procedure, seed=seed, monitor=monitor
            )
            codes = _ascend(scorer, codes, on_device, keys, procedure, monitor)
            images, final = _finish(scorer, codes, on_device)
    return Prototypes(
        images=images.cpu(),
        activations=final.cpu(),
        latents=codes.cpu(),
        channels=index,
        dead=(final <= 0).cpu(),
        redrawn=_mask(redrawn, len(index)),
        evolution_activations=evolved.cpu(),
    )


@contextlib.contextmanager
def _searching(model: nn.Module, device: torch.device, use_amp: bool) -> Iterator[None]:
    """``model`` on ``device`` in eval mode (channels_last under autocast) with no parameter
    gradients (they flow to the codes only); its mode and ``requires_grad`` flags restored after."""
    was_training = model.training
    model.eval().to(device)
    if use_amp:
        model.to(memory_format=torch.channels_last)
    trainable = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        model.train(was_training)
        for parameter, flag in zip(model.parameters(), trainable):
            parameter.requires_grad_(flag)


def _prior(procedure: Procedure, device: torch.device) -> Generator:
    """The procedure's generator (made from its name, or the one it holds) on ``device``, in eval
    mode and without parameter gradients: they flow to the codes only."""
    weights, antialias = procedure.generator_weights, procedure.resize == "antialias"
    prior = make_generator(procedure.generator, procedure.image_size, weights, antialias)
    return prior.to(device).eval().requires_grad_(False)


def _setup(
    read: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    prior: Generator,
    procedure: Procedure,
    channels: torch.Tensor,
    seed: int,
    start_seed: int | None,
    device: torch.device,
) -> tuple[_Scorer, torch.Tensor, torch.Tensor]:
    """The scorer (passes sized to the free memory on a GPU, unless ``max_batch`` is given),
    the start codes (N, d) and the transforms' stream keys (N,) of ``channels`` (N,), on ``device``."""
    scorer = _Scorer(
        read,
        prior,
        Normalizer(procedure.normalize or IMAGENET_NORMALIZE, device),
        device,
        use_amp=uses_bfloat16(device, procedure.precision),
        before_relu=procedure.objective == "before_relu",
        read_unit=procedure.read_unit,
        max_batch=procedure.max_batch or 1 << 62,
    )
    keys = stream_keys(stream_seed(seed, "transforms"), channels).to(device)
    start_stream = stream_seed(seed if start_seed is None else start_seed, "start")
    start = prior.sample(stream_keys(start_stream, channels), step=0).to(device)
    if procedure.max_batch is None and device.type == "cuda":
        fitted = _fit_to_memory(scorer, start, channels.to(device), procedure.transforms, keys)
        scorer = dataclasses.replace(scorer, max_batch=fitted)  # a new scorer, sized
    return scorer, start, keys


def _finish(
    scorer: _Scorer, codes: torch.Tensor, channels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """codes (N, d), channels (N,) -> images (N, 3, S, S) on the store's 8-bit grid, and their
    activations (N,) computed exactly (float32, no autocast)."""
    with torch.no_grad():
        images = torch.cat(
            [
                scorer.render(codes[i : i + scorer.max_batch], exact=True)
                for i in range(0, len(codes), scorer.max_batch)
            ]
        )
        # What is reported is what the store keeps: the image on its 8-bit grid.
        images = images.clamp(0, 1).mul(255).round().div(255)
        return images, scorer.exact_activations(images, channels)


def _mask(index: torch.Tensor, length: int) -> torch.Tensor:
    mask = torch.zeros(length, dtype=torch.bool)
    mask[index] = True
    return mask
