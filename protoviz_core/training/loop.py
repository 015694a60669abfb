"""The training loop of every learner: a checkpoint every epoch, resume after a kill.

Paper Sec. 6.1: SGD (lr 0.06, momentum 0.9, weight decay 5e-4) with cosine annealing over
the epochs. The learner (``train.method``, :mod:`protoviz_core.models.learners`: SimCLR, the
paper's, or MoCo, BYOL, SimSiam, Barlow Twins, VICReg, DINO, supervised) makes its views
of each image (two for most, DINO's 2 global + 6 local, supervised's one) and gives the
loss. Momentum encoders, DINO's teacher and MoCo's memory bank are part of the learner, so
of its state.

Resumption is exact: every random choice of epoch ``e`` (shuffling, augmentations,
worker seeds) is seeded from ``(seed, e)``, and the model, optimiser and scheduler
state after the last finished epoch is kept in one state file. A resumed run
therefore ends with the same weights as an uninterrupted one.

:func:`train_learner` asks :func:`~protoviz_core.training.plan.plan_training` what the
files on disk leave to do, makes lost checkpoints again with
:func:`~protoviz_core.training.replay.refill_holes`, and trains the remaining epochs with a
:class:`TrainingRun`.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch

from protoviz_core.engine.normalization import normalize_images
from protoviz_core.engine.precision import autocast, uses_bfloat16
from protoviz_core.infra.atomic import save_atomic
from protoviz_core.infra.errors import ProtovizError
from protoviz_core.models.backbones import FEATURE_DIMS, NORMALIZE, build_backbone
from protoviz_core.models.learners import (
    Learner,
    build_learner,
    learner_class,
    view_transform,
)
from protoviz_core.pipeline.config import ParamsError, TrainParams
from protoviz_core.training.checkpoints import CHECKPOINT_FORMAT, checkpoint_path, list_checkpoints
from protoviz_core.training.plan import (
    STATE_FORMAT,
    Finished,
    Fresh,
    Log,
    Refill,
    Resume,
    TrainingFiles,
    finished_losses,
    plan_training,
    remove_stale,
    snapshot_path,
)
from protoviz_core.training.replay import flat_tensors, refill_holes
from protoviz_core.training.views import Views, stack_views

Optimizer = torch.optim.Optimizer
Scheduler = torch.optim.lr_scheduler.LRScheduler
OnStep = Callable[[int, int, float], None]  # (epoch, step within the epoch from 1, loss)


class TrainingDiverged(ProtovizError, FloatingPointError):
    """The loss or the weights became NaN or infinite; names the epoch, the step and the likely param."""


@dataclass
class TrainResult:
    losses: dict[int, float]  # mean training loss per epoch (1..E)
    trained_epochs: list[int]  # epochs trained by this call (not resumed from disk)
    images_per_s: float  # throughput over the epochs trained by this call
    checkpoints: dict[int, Path] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch  # distinct per (seed, epoch), stable across runs


def _cpu_copy(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``tensors`` copied to the CPU: ``.cpu()`` alone would share storage with a model on the
    CPU, so a checkpoint waiting to be written, or a replay's weights waiting to be compared,
    would change as that model trains on."""
    return {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}


def _fresh_model(seed: int, config: TrainParams) -> tuple[Learner, Optimizer, Scheduler]:
    """The learner, optimiser and scheduler before epoch 1: initial weights come from the training seed."""
    seed_everything(seed)
    model = build_learner(
        config.method,
        build_backbone(config.backbone),
        features=FEATURE_DIMS[config.backbone],
        temperature=config.temperature,
        epochs=config.epochs,
    )
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.epochs, 1))
    return model, optimizer, scheduler


CALIBRATION_IMAGES = 10_000  # at most this many training images measure epoch 0's BatchNorm statistics


def with_measured_batchnorm(
    backbone: torch.nn.Module, images: np.ndarray, device: torch.device, batch_size: int
) -> torch.nn.Module:
    """A copy of ``backbone`` whose BatchNorm running statistics are measured on ``images``.

    Epoch 0's checkpoint is the initial weights with such statistics. A fresh
    network's BatchNorm running statistics are placeholders (mean 0, variance 1) that
    no data produced. Evaluated with them, epoch 0 would compute a function the network
    never computes in training, where BatchNorm normalises with batch statistics, while
    every later checkpoint holds statistics gathered from training batches
    (bench/choices/epoch0_batchnorm.py measures the difference on the probe). The statistics are
    averaged over the full batches of the first :data:`CALIBRATION_IMAGES` images, un-augmented and normalised
    (``torch.optim.swa_utils.update_bn``): no weight changes, no random numbers drawn.

    Args:
        images: uint8 (N, 3, S, S), N >= batch_size (e.g. the training images).

    Returns:
        The copy, on ``device``; ``backbone`` itself is untouched.
    """
    measured = copy.deepcopy(backbone).to(device)
    # Full batches only, as in training (drop_last): a leftover of one image cannot be
    # normalised at a 1x1 feature map, and update_bn weights every batch alike.
    count = max(min(len(images), CALIBRATION_IMAGES) // batch_size, 1) * batch_size
    batches = (
        normalize_images(
            torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).float() / 255,
            NORMALIZE,
        )
        for start in range(0, count, batch_size)
    )
    with torch.no_grad():
        torch.optim.swa_utils.update_bn(batches, measured, device=device)
    return measured


@dataclass(frozen=True)
class RunSetup:
    """What every epoch of one configuration needs: the same for the run and its replays."""

    images: np.ndarray  # uint8 (N, 3, S, S): the training images
    dataset: Views  # the learner's views of ``images`` (and their labels)
    config: TrainParams
    seed: int  # the training seed; epoch e's random choices come from (seed, e)
    device: torch.device
    on_step: OnStep

    @classmethod
    def of(
        cls,
        images: np.ndarray,
        labels: np.ndarray | None,
        config: TrainParams,
        *,
        aug: str,
        image_size: int,
        seed: int,
        device: torch.device,
        on_step: OnStep,
    ) -> RunSetup:
        """The setup that trains on the learner's views of ``images`` under ``aug`` (``labels``:
        int (N,), for the supervised learner; None for the others)."""
        transform = view_transform(
            config.method,
            aug,
            image_size,
            min_scale=config.min_scale,
            cj_strength=config.cj_strength,
            gaussian_blur=config.gaussian_blur,
        )
        return cls(images, Views(images, transform, labels), config, seed, device, on_step)


class TrainingRun:
    """A learner in training: its model, optimiser and schedule, the epoch it is after, the
    losses so far, and the time its own epochs took. The run that a call trains and each of
    its replays (:mod:`protoviz_core.training.replay`) is one."""

    def __init__(self, setup: RunSetup, state: dict | None = None) -> None:
        """Before epoch 1, at the training seed's initial weights; given a resume state (or a
        snapshot of it), after that state's epoch."""
        self.setup = setup
        self.model, self.optimizer, self.scheduler = _fresh_model(setup.seed, setup.config)
        self.epoch = 0  # the last finished epoch
        self.losses: dict[int, float] = {}  # mean loss per epoch, the state's included
        self.trained: list[int] = []  # the epochs this object trained
        self._seconds = 0.0  # spent in those epochs, not in saving or checking them
        if state is not None:
            self.model.load_state_dict(state["model"])
            # Placed first: the optimiser puts its loaded state (momentum) where the parameters are.
            _place(self.model, setup.device)
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.epoch = int(state["epoch"])
            self.losses = {int(k): float(v) for k, v in state["losses"].items()}

    @property
    def device(self) -> torch.device:
        return self.setup.device

    def train_until(self, last: int) -> Iterator[tuple[int, float]]:
        """Train epochs ``epoch + 1 .. last`` in order, yielding (epoch, mean loss) after each, its
        weights checked finite; the caller saves or checks them before the next epoch starts.

        Raises:
            TrainingDiverged: the loss or the weights became non-finite in that epoch.
        """
        _place(self.model, self.device)
        for epoch in range(self.epoch + 1, last + 1):
            started = time.perf_counter()
            loss = _train_one_epoch(self.model, self.optimizer, self.setup, epoch)
            self.scheduler.step()
            self._seconds += time.perf_counter() - started
            _require_finite_weights(self.model, epoch, self.setup.config)
            self.epoch = epoch
            self.losses[epoch] = loss
            self.trained.append(epoch)
            yield epoch, loss

    @property
    def images_per_s(self) -> float:
        """Throughput over the epochs this object trained (full batches only); NaN when none."""
        batch_size = self.setup.config.batch_size
        seen = len(self.trained) * (len(self.setup.dataset) // batch_size) * batch_size
        return seen / self._seconds if self.trained else float("nan")

    def backbone_weights(self) -> dict[str, torch.Tensor]:
        """The backbone's state dict now, on the CPU: the checkpoint of :attr:`epoch`."""
        return _cpu_copy(self.model.backbone.state_dict())

    def initial_weights(self) -> dict[str, torch.Tensor]:
        """Epoch 0's checkpoint, on the CPU: the untrained backbone, BatchNorm statistics measured
        (:func:`with_measured_batchnorm`); the model itself is untouched."""
        setup = self.setup
        measured = with_measured_batchnorm(
            self.model.backbone, setup.images, setup.device, setup.config.batch_size
        )
        return _cpu_copy(measured.state_dict())

    def model_weights(self) -> dict[str, torch.Tensor]:
        """Every tensor of the learner (heads and extra state included, flattened), on the CPU."""
        return _cpu_copy(flat_tensors(self.model.state_dict()))

    def state(self) -> dict:
        """The resume state after :attr:`epoch`: model, optimiser, scheduler and the losses so far."""
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "losses": {str(k): v for k, v in self.losses.items()},
        }


def _snapshot_epochs(config: TrainParams) -> frozenset[int]:
    """The epochs after which the resume state is also kept as a snapshot: every
    ``state_every``-th, but the last (whose checkpoint a replay never starts before)."""
    if not config.state_every:
        return frozenset()
    return frozenset(range(config.state_every, config.epochs, config.state_every))


@dataclass(frozen=True)
class _Outputs:
    """Writes one configuration's checkpoints, resume state and state snapshots."""

    files: TrainingFiles
    meta: dict  # what every checkpoint says about its run (:mod:`protoviz_core.training.checkpoints`)
    snapshot_epochs: frozenset[int]  # after these, the resume state is also kept as a snapshot

    @classmethod
    def of(
        cls, files: TrainingFiles, config: TrainParams, *, aug: str, seed: int, image_size: int
    ) -> _Outputs:
        meta = {
            "format": CHECKPOINT_FORMAT,
            "arch": config.backbone,
            "training_hash": files.training_hash,
            "image_size": image_size,
            "normalize": {k: list(v) for k, v in NORMALIZE.items()},
            "aug": aug,
            "seed": seed,
            "method": config.method,
        }
        snapshots = _snapshot_epochs(config) if files.snapshot_dir is not None else frozenset()
        return cls(files, meta, snapshots)

    def save_checkpoint(self, epoch: int, weights: dict[str, torch.Tensor], loss: float | None) -> None:
        """Write epoch ``epoch``'s checkpoint: the backbone ``weights`` (on the CPU) and its mean loss."""
        save_atomic(
            {**self.meta, "epoch": epoch, "loss": loss, "backbone": weights},
            checkpoint_path(self.files.checkpoint_dir, epoch),
        )

    def save_state(self, run: TrainingRun) -> None:
        """Write ``run``'s resume state; after a snapshot epoch also as a snapshot."""
        state = {"format": STATE_FORMAT, "training_hash": self.files.training_hash, **run.state()}
        if run.epoch in self.snapshot_epochs:
            save_atomic(state, snapshot_path(self.files.snapshot_dir, run.epoch))
        save_atomic(state, self.files.state_path)


def train_learner(
    images: np.ndarray,
    config: TrainParams,
    *,
    labels: np.ndarray | None = None,
    aug: str,
    seed: int,
    image_size: int,
    checkpoint_dir: str | Path,
    state_path: str | Path,
    training_hash: str,
    device: torch.device,
    snapshot_dir: str | Path | None = None,
    on_step: OnStep = lambda epoch, step, loss: None,
    on_epoch_end: Callable[[int, float], None] = lambda epoch, loss: None,
    log: Log = print,
) -> TrainResult:
    """Train the backbone on ``images`` with ``config.method`` and save it after every epoch.

    A checkpoint missing or damaged inside the finished range (``0..`` the resume state's
    epoch) is made again by replaying training up to it (:mod:`protoviz_core.training.replay`), so the
    run ends with the checkpoints of an uninterrupted run, never with a hole.

    Args:
        images: uint8 (N, 3, S, S), e.g. the memory-mapped STL10 unlabeled split.
        config: the ``train`` section of params.yaml (``method``: the learner).
        labels: int (N,) class labels, for ``train.method: supervised``.
        aug: ``clrjit`` or ``keepclr``; seed: the training seed.
        image_size: side of the views fed to the network.
        checkpoint_dir: receives ``epoch_0000.pt`` (initial weights) .. ``epoch_{E:04d}.pt``.
        state_path: model + optimiser + scheduler after the last finished epoch.
        training_hash: identity of this configuration
            (:meth:`~protoviz_core.pipeline.config.Params.training_identity`); checkpoints and state of
            any other configuration found on disk are discarded, never mixed in.
        device: resolved by the caller (the stage claims GPUs).
        snapshot_dir: receives ``state_XXXX.pt``, the resume state after every
            ``config.state_every``-th epoch, where replays start; None keeps none.
        on_step: called with (epoch, step within the epoch from 1, loss) after each step (progress).
        on_epoch_end: called with (epoch, mean loss) after each trained epoch.

    Returns:
        The per-epoch losses (resumed ones included) and this call's throughput.

    Raises:
        TrainingDiverged: the loss or the weights became non-finite; the checkpoints
            and resume state of the epochs before are kept.
        CheckpointError: replaying training to refill a hole did not reproduce the
            checkpoints around it (a non-deterministic device); says how to restore it.
    """
    if len(images) < config.batch_size:
        raise ParamsError(
            f"train.batch_size ({config.batch_size}) exceeds the {len(images)} training images; lower it"
        )
    files = _training_files(checkpoint_dir, state_path, snapshot_dir, training_hash)
    plan = plan_training(files, config.epochs)
    if isinstance(plan, Finished):
        log(
            f"all {config.epochs} epochs of this configuration are in {files.checkpoint_dir}; "
            "nothing to train"
        )
        return _untrained(plan.losses, files)
    remove_stale(files, plan.last_finished, log)
    if learner_class(config.method).needs_labels and labels is None:
        raise ParamsError(f"train.method: {config.method} trains on labelled images; none were given")
    setup = RunSetup.of(
        images, labels, config, aug=aug, image_size=image_size, seed=seed, device=device, on_step=on_step
    )
    outputs = _Outputs.of(files, config, aug=aug, seed=seed, image_size=image_size)
    if isinstance(plan, Resume | Refill) and plan.holes:
        start_run = partial(TrainingRun, setup)  # each replay is a run of its own, at its own start
        refill_holes(plan, files, start_run=start_run, save_checkpoint=outputs.save_checkpoint, log=log)
    if isinstance(plan, Refill):  # refilled above: the run is finished
        return _untrained(finished_losses(files.checkpoint_dir, config.epochs, training_hash) or {}, files)
    return _train_rest(plan, setup, outputs, on_epoch_end, log)


def _training_files(
    checkpoint_dir: str | Path, state_path: str | Path, snapshot_dir: str | Path | None, training_hash: str
) -> TrainingFiles:
    files = TrainingFiles(
        Path(checkpoint_dir),
        Path(state_path),
        Path(snapshot_dir) if snapshot_dir is not None else None,
        training_hash,
    )
    if files.snapshot_dir is not None:
        files.snapshot_dir.mkdir(parents=True, exist_ok=True)  # a DVC output, even while it holds none
    return files


def _untrained(losses: dict[int, float], files: TrainingFiles) -> TrainResult:
    """The result of a call that found the run finished (or only refilled it)."""
    return TrainResult(
        losses=losses,
        trained_epochs=[],
        images_per_s=float("nan"),
        checkpoints=list_checkpoints(files.checkpoint_dir),
    )


def _train_rest(
    plan: Fresh | Resume,
    setup: RunSetup,
    outputs: _Outputs,
    on_epoch_end: Callable[[int, float], None],
    log: Log,
) -> TrainResult:
    """Train the epochs after ``plan``'s last finished one, saving each epoch's checkpoint and the
    resume state before ``on_epoch_end`` hears of it (a kill there loses nothing)."""
    if isinstance(plan, Resume):
        run = TrainingRun(setup, plan.state)
        log(f"resuming after epoch {run.epoch} from {outputs.files.state_path}")
    else:
        run = TrainingRun(setup)
        outputs.save_checkpoint(0, run.initial_weights(), None)
    for epoch, loss in run.train_until(setup.config.epochs):
        outputs.save_checkpoint(epoch, run.backbone_weights(), loss)
        outputs.save_state(run)
        on_epoch_end(epoch, loss)
    return TrainResult(
        losses=run.losses,
        trained_epochs=run.trained,
        images_per_s=run.images_per_s,
        checkpoints=list_checkpoints(outputs.files.checkpoint_dir),
    )


def _place(model: Learner, device: torch.device) -> None:
    """Move ``model`` to ``device``; on a GPU in channels_last, the layout its convolutions prefer."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)


def _diverged(what: str, epoch: int, step: int | None, config: TrainParams) -> TrainingDiverged:
    where = f"epoch {epoch}, step {step}" if step is not None else f"the end of epoch {epoch}"
    return TrainingDiverged(
        f"train: {what} at {where}; training diverged, so it stopped there and kept the checkpoints "
        f"of the epochs before. Lower train.lr (now {config.lr:g}) and run again"
    )


def _require_finite_weights(model: Learner, epoch: int, config: TrainParams) -> None:
    """Stop before a checkpoint with NaN or infinite weights is written."""
    for name, tensor in flat_tensors(model.state_dict()).items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise _diverged(f"the weights {name} are not finite", epoch, None, config)


def _train_one_epoch(model: Learner, optimizer: Optimizer, setup: RunSetup, epoch: int) -> float:
    """One pass over ``setup.dataset`` in full batches; returns the mean loss. Seeded from (seed, epoch).

    Each batch is the learner's list of views, (B, 3, S', S') each: two for most learners,
    DINO's 2 global + 6 local (smaller S'), supervised's one; and (B,) labels (used by the
    supervised learner only).

    Raises:
        TrainingDiverged: at the first step whose loss is NaN or infinite.
    """
    config, device = setup.config, setup.device
    epoch_seed = _epoch_seed(setup.seed, epoch)
    seed_everything(epoch_seed)  # augmentations in the main process (num_workers=0)
    loader = torch.utils.data.DataLoader(
        setup.dataset,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=True,  # BatchNorm and the contrastive losses need full batches
        num_workers=config.num_workers,
        generator=torch.Generator().manual_seed(epoch_seed),  # shuffling and worker seeds
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        collate_fn=stack_views,  # [(B, 3, S, S) per view], (B,) labels
    )
    model.train()
    use_amp = uses_bfloat16(device)
    total, batches = 0.0, 0
    for views, labels in loader:
        views = [view.to(device, non_blocking=True) for view in views]  # (B, 3, S', S') each
        if use_amp:
            views = [view.contiguous(memory_format=torch.channels_last) for view in views]
        labels = labels.to(device, non_blocking=True)
        model.step_begins(epoch, config.epochs)
        with autocast(device, use_amp):
            outputs = model(views)
        loss = model.criterion([output.float() for output in outputs], labels, epoch)
        value = loss.item()  # the progress bar needs it anyway: checking it costs no extra sync
        if not math.isfinite(value):
            raise _diverged(f"the loss is {value}", epoch, batches + 1, config)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        model.gradients_ready(epoch)
        optimizer.step()
        total += value
        batches += 1
        setup.on_step(epoch, batches, value)
    return total / max(batches, 1)
