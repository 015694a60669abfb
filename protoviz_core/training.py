"""The training loop of every learner: checkpoint every epoch, resume after a kill.

Paper Sec. 6.1: SGD (lr 0.06, momentum 0.9, weight decay 5e-4) with cosine
annealing over the epochs. The learner (:mod:`protoviz_core.learners`) gives the loss:
SimCLR's NT-Xent on two views of each image (the paper's), or another method's. Momentum
encoders, DINO's teacher and MoCo's memory bank are part of the learner, so of its state.

Resumption is exact: every random choice of epoch ``e`` (shuffling, augmentations,
worker seeds) is seeded from ``(seed, e)``, and the model, optimiser and scheduler
state after the last finished epoch is kept in one state file. A resumed run
therefore ends with the same weights as an uninterrupted one.

A checkpoint lost later is made again by replaying training up to it. The replay starts
from the newest *state snapshot* before the hole (the resume state as it was after epochs
``train.state_every``, 2 x ``state_every``, ...; a DVC output of its own, pushed with the
checkpoints), so it costs at most ``state_every`` + 1 epochs instead of the whole run.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from protoviz_core.atomic import load_or_none, remove_leftovers, save_atomic
from protoviz_core.checkpoints import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    read_checkpoint,
)
from protoviz_core.config import ParamsError, TrainParams
from protoviz_core.engine.normalization import normalize_images
from protoviz_core.engine.precision import autocast, uses_bfloat16
from protoviz_core.errors import ProtovizError
from protoviz_core.learners import Learner, Views, build_learner, stack_views, view_transform
from protoviz_core.simclr import FEATURE_DIMS, NORMALIZE, build_backbone

STATE_FORMAT = "protoviz.train_state/1"

Optimizer = torch.optim.Optimizer
Scheduler = torch.optim.lr_scheduler.LRScheduler
Log = Callable[[str], None]


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


def _load_state(state_path: Path, training_hash: str, mmap: bool = False) -> dict | None:
    """The resume state (or a snapshot of it), or None if absent, unreadable or from another configuration."""
    state = load_or_none(state_path, mmap=mmap)  # a corrupt state only costs retraining
    if (
        not isinstance(state, dict)
        or state.get("format") != STATE_FORMAT
        or state.get("training_hash") != training_hash
    ):
        return None
    return state


SNAPSHOT_NAME = "state_{epoch:04d}.pt"


def snapshot_path(directory: str | Path, epoch: int) -> Path:
    """The state snapshot after ``epoch`` in ``directory``."""
    return Path(directory) / SNAPSHOT_NAME.format(epoch=epoch)


def list_snapshots(directory: str | Path | None) -> dict[int, Path]:
    """{epoch: path} of the state snapshot files in ``directory`` (none when it is None or absent)."""
    if directory is None or not Path(directory).is_dir():
        return {}
    found = {}
    for path in Path(directory).glob("state_*.pt"):
        number = path.stem.removeprefix("state_")
        if number.isdigit():
            found[int(number)] = path
    return dict(sorted(found.items()))


def _snapshot_epochs(config: TrainParams) -> set[int]:
    """The epochs after which the resume state is also kept as a snapshot: every
    ``state_every``-th, but the last (whose checkpoint a replay never starts before)."""
    if not config.state_every:
        return set()
    return set(range(config.state_every, config.epochs, config.state_every))


def _remove_stale_snapshots(directory: Path | None, keep_up_to: int, training_hash: str, log: Log) -> None:
    """Delete snapshots a replay of this run must not start from: later epochs than the
    resume state's, other configurations, damaged files."""
    for leftover in remove_leftovers(directory) if directory is not None and directory.is_dir() else []:
        log(f"removing {leftover}: left by a write that was killed")
    for epoch, path in list_snapshots(directory).items():
        state = _load_state(path, training_hash, mmap=True)
        if epoch > keep_up_to or state is None or int(state["epoch"]) != epoch:
            log(f"removing {path}: from an unfinished run, damaged, or from another configuration")
            path.unlink()


def _finished_run(directory: Path, epochs: int, training_hash: str) -> dict[int, float] | None:
    """Per-epoch losses when checkpoints 0..epochs of this configuration all exist, else None."""
    found = list_checkpoints(directory)
    if set(range(epochs + 1)) - set(found):
        return None
    losses = {}
    for epoch in range(epochs + 1):
        try:
            meta = read_checkpoint(found[epoch], mmap=True)
        except CheckpointError:
            return None
        if meta["training_hash"] != training_hash:
            return None
        if epoch > 0:
            losses[epoch] = float(meta.get("loss") or float("nan"))
    return losses


def _is_ours(path: Path, training_hash: str) -> bool:
    """Whether ``path`` is a readable checkpoint of this configuration."""
    try:
        return read_checkpoint(path, mmap=True)["training_hash"] == training_hash
    except CheckpointError:
        return False


def _remove_stale_checkpoints(directory: Path, keep_up_to: int, training_hash: str, log: Log) -> list[int]:
    """Delete checkpoints that this run will not keep: later epochs, other configurations, damaged files.

    Returns:
        The epochs in ``0..keep_up_to`` that now have no checkpoint (holes to refill).
    """
    for leftover in remove_leftovers(directory):
        log(f"removing {leftover}: left by a write that was killed")
    for epoch, path in list_checkpoints(directory).items():
        if epoch > keep_up_to:
            log(f"removing {path}: from an unfinished run")
            path.unlink()
        elif not _is_ours(path, training_hash):
            log(f"removing {path}: damaged, holding another epoch, or from another configuration")
            path.unlink()
    return sorted(set(range(keep_up_to + 1)) - set(list_checkpoints(directory)))


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


def _backbone_weights(model: Learner) -> dict[str, torch.Tensor]:
    """A copy on the CPU (``.cpu()`` alone would share storage with a CPU model that trains on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.backbone.state_dict().items()}


CALIBRATION_IMAGES = 10_000  # at most this many unlabeled images measure epoch 0's BatchNorm statistics


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


def _initial_backbone_weights(
    model: Learner, images: np.ndarray, device: torch.device, batch_size: int
) -> dict[str, torch.Tensor]:
    """Epoch 0's checkpoint: the backbone before training, BatchNorm statistics measured
    (:func:`with_measured_batchnorm`); training itself starts from ``model`` untouched. On the CPU."""
    measured = with_measured_batchnorm(model.backbone, images, device, batch_size)
    return {k: v.detach().to("cpu", copy=True) for k, v in measured.state_dict().items()}


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    """A state dict's tensors, with a learner's extra state (MoCo's memory bank) flattened in."""
    flat = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": tensor for inner, tensor in value.items()})
        else:
            flat[key] = value
    return flat


def _same_weights(saved: dict, replayed: dict) -> bool:
    """Equal up to float32 rounding (a replay on the same device and thread count is usually bit-exact)."""
    saved, replayed = _tensors(saved), _tensors(replayed)
    return saved.keys() == replayed.keys() and all(
        torch.allclose(saved[k].float(), replayed[k].float(), rtol=1e-4, atol=1e-6) for k in saved
    )


class _TrainingRun:
    """One configuration's training on disk: the data it sees, its checkpoints and resume state.

    Holds what every epoch needs (the augmented views, the learner, the device) so that
    training, saving and replaying a finished range read as single steps.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None,
        config: TrainParams,
        *,
        aug: str,
        seed: int,
        image_size: int,
        checkpoint_dir: Path,
        state_path: Path,
        snapshot_dir: Path | None,
        training_hash: str,
        device: torch.device,
        on_step: Callable[[int, int, float], None],
        log: Callable[[str], None],
    ) -> None:
        self.images, self.config, self.seed, self.device = images, config, seed, device
        self.checkpoint_dir, self.state_path, self.training_hash = checkpoint_dir, state_path, training_hash
        self.snapshot_dir = snapshot_dir
        self.on_step, self.log = on_step, log
        transform = view_transform(
            config.method,
            aug,
            image_size,
            min_scale=config.min_scale,
            cj_strength=config.cj_strength,
            gaussian_blur=config.gaussian_blur,
        )
        self.dataset = Views(images, transform, labels)
        self.train_seconds = 0.0  # time spent in training epochs, for images_per_s
        self.meta = {
            "format": CHECKPOINT_FORMAT,
            "arch": config.backbone,
            "training_hash": training_hash,
            "image_size": image_size,
            "normalize": {k: list(v) for k, v in NORMALIZE.items()},
            "aug": aug,
            "seed": seed,
            "method": config.method,
        }

    def fresh_model(self) -> tuple[Learner, Optimizer, Scheduler]:
        """The model, optimiser and scheduler before epoch 1 (:func:`_fresh_model`)."""
        return _fresh_model(self.seed, self.config)

    def initial_weights(self, model: Learner) -> dict[str, torch.Tensor]:
        """Epoch 0's checkpoint weights for the untrained ``model`` (:func:`_initial_backbone_weights`)."""
        return _initial_backbone_weights(model, self.images, self.device, self.config.batch_size)

    def save(self, weights: dict[str, torch.Tensor], epoch: int, loss: float | None) -> None:
        """Write epoch ``epoch``'s checkpoint (backbone weights on the CPU)."""
        save_atomic(
            {**self.meta, "epoch": epoch, "loss": loss, "backbone": weights},
            checkpoint_path(self.checkpoint_dir, epoch),
        )

    def save_state(
        self, model: Learner, optimizer: Optimizer, scheduler: Scheduler, epoch: int, losses: dict[int, float]
    ) -> None:
        """Write the resume state after ``epoch``: model, optimiser, scheduler and the losses so far;
        after a snapshot epoch (:func:`_snapshot_epochs`) also as a snapshot in ``snapshot_dir``."""
        state = {
            "format": STATE_FORMAT,
            "training_hash": self.training_hash,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "losses": {str(k): v for k, v in losses.items()},
        }
        if self.snapshot_dir is not None and epoch in _snapshot_epochs(self.config):
            save_atomic(state, snapshot_path(self.snapshot_dir, epoch))
        save_atomic(state, self.state_path)

    def replay_start(self, first_hole: int) -> tuple[int, Learner, Optimizer, Scheduler]:
        """Where a replay up to ``first_hole`` begins: the newest snapshot before it whose backbone
        is the checkpoint of its epoch, loaded; else the initial weights (epoch 0).

        Returns:
            (epoch the model is after, model on the device, optimiser, scheduler).
        """
        model, optimizer, scheduler = self.fresh_model()
        for epoch, path in reversed(list_snapshots(self.snapshot_dir).items()):
            if epoch >= first_hole:
                continue
            state = _load_state(path, self.training_hash)
            backbone = {
                k.removeprefix("backbone."): v
                for k, v in (state or {}).get("model", {}).items()
                if k.startswith("backbone.")
            }
            checkpoint = read_checkpoint(checkpoint_path(self.checkpoint_dir, epoch))["backbone"]
            if state is None or not _same_weights(checkpoint, backbone):
                self.log(
                    f"{path}: not the state its epoch's checkpoint was saved from; not replaying from it"
                )
                continue
            model.load_state_dict(state["model"])
            _place(model, self.device)  # first: the optimiser puts its loaded state where the parameters are
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            return epoch, model, optimizer, scheduler
        return 0, model, optimizer, scheduler

    def run_epochs(
        self,
        model: Learner,
        optimizer: Optimizer,
        scheduler: Scheduler,
        epochs: range,
        on_epoch_done: Callable[[int, float], None],
    ) -> None:
        """Train ``epochs`` in order; after each, check the weights and call
        ``on_epoch_done(epoch, loss)``."""
        _place(model, self.device)
        for epoch in epochs:
            started = time.perf_counter()
            loss = _train_one_epoch(
                model,
                self.dataset,
                optimizer,
                self.config,
                self.device,
                self.seed,
                epoch,
                lambda step, loss: self.on_step(epoch, step, loss),
            )
            scheduler.step()
            self.train_seconds += time.perf_counter() - started
            _require_finite_weights(model, epoch, self.config)
            on_epoch_done(epoch, loss)

    def replay_segments(self, holes: list[int], last_finished: int) -> list[tuple[int, int]]:
        """(first hole, last epoch to replay) of each replay that ``holes`` need: a hole's replay
        runs one epoch past it (to check it), from the newest snapshot before it; a hole that an
        earlier replay passes on its way, or whose snapshot lies before where that replay ends,
        joins that replay."""
        snapshots = list(list_snapshots(self.snapshot_dir))
        segments: list[tuple[int, int]] = []
        for hole in sorted(holes):
            start = max((e for e in snapshots if e < hole), default=0)
            end = min(hole + 1, last_finished)
            if segments and start < segments[-1][1]:
                segments[-1] = (segments[-1][0], max(segments[-1][1], end))
            else:
                segments.append((hole, end))
        return segments

    def refill(self, holes: list[int], last_finished: int, state: dict | None) -> None:
        """Make the missing checkpoints ``holes`` of a finished run again, by replaying training:
        for each group of holes (:meth:`replay_segments`) from the newest state snapshot before
        it (:meth:`replay_start`), or from epoch 0. Holes at 0 and 90 of 100 epochs with
        ``state_every: 10`` replay epoch 1, then epochs 81..91.

        Each replay goes one epoch past its last hole and is checked there against the
        checkpoint on disk (or against the resume state ``state`` when the last hole is the last
        finished epoch), and against every intact checkpoint on the way; only when all agree
        are the missing checkpoints written.

        A missing epoch 0 is made again from the seeded initial weights and a new measurement
        of its BatchNorm statistics, which nothing on disk can check: on a CPU it is
        bit-exact (tested); on a GPU it matches up to the device's rounding.

        Raises:
            CheckpointError: the replay does not reproduce the run (a non-deterministic device).
        """
        self.log(
            f"{self.checkpoint_dir}: epochs {holes} are missing inside the finished run 0..{last_finished}; "
            f"replaying training to make them again"
        )
        made: dict[int, tuple[dict[str, torch.Tensor], float | None]] = {}

        def refuse(reference: str) -> CheckpointError:
            return CheckpointError(
                f"{reference}: replaying training on {self.device.type} does not reproduce it, "
                f"so the missing epochs {holes} cannot be made again identically; restore them with "
                f"`dvc checkout {self.checkpoint_dir}`, or delete {self.checkpoint_dir} "
                f"and {self.state_path} to retrain"
            )

        for first, end in self.replay_segments(holes, last_finished):
            start, model, optimizer, scheduler = self.replay_start(first)
            origin = f"epoch {start}'s state snapshot" if start else "the initial weights"
            self.log(f"{self.checkpoint_dir}: replaying epochs {start + 1}..{end} from {origin}")
            if first == 0:
                made[0] = (self.initial_weights(model), None)

            def check_or_keep(epoch: int, loss: float, model: Learner = model) -> None:
                if epoch in holes:
                    made[epoch] = (_backbone_weights(model), loss)
                    return
                path = checkpoint_path(self.checkpoint_dir, epoch)
                if not _same_weights(read_checkpoint(path)["backbone"], _backbone_weights(model)):
                    raise refuse(str(path))

            self.run_epochs(model, optimizer, scheduler, range(start + 1, end + 1), check_or_keep)
            if end in holes:  # no checkpoint after the last hole: the resume state is the reference
                replayed = {
                    k: v.detach().to("cpu", copy=True) for k, v in _tensors(model.state_dict()).items()
                }
                if state is None or not _same_weights(state["model"], replayed):
                    raise refuse(str(self.state_path))
        for epoch, (weights, loss) in sorted(made.items()):
            self.save(weights, epoch, loss)


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
    on_step: Callable[[int, int, float], None] = lambda epoch, step, loss: None,
    on_epoch_end: Callable[[int, float], None] = lambda epoch, loss: None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train the backbone on ``images`` with ``config.method`` and save it after every epoch.

    A checkpoint missing or damaged inside the finished range (``0..`` the resume
    state's epoch) is made again by replaying training up to it, from the newest state
    snapshot before it or the initial weights, so the run ends with the checkpoints of an
    uninterrupted run, never with a hole.

    Args:
        images: uint8 (N, 3, S, S), e.g. the memory-mapped STL10 unlabeled split.
        config: the ``train`` section of params.yaml (``method``: the learner).
        labels: int (N,) class labels, for ``train.method: supervised``.
        aug: ``clrjit`` or ``keepclr``; seed: the training seed.
        image_size: side of the views fed to the network.
        checkpoint_dir: receives ``epoch_0000.pt`` (initial weights) .. ``epoch_{E:04d}.pt``.
        state_path: model + optimiser + scheduler after the last finished epoch.
        snapshot_dir: receives ``state_XXXX.pt``, the resume state after every
            ``config.state_every``-th epoch, where replays start; None keeps none.
        training_hash: identity of this configuration
            (:meth:`~protoviz_core.config.Params.training_identity`); checkpoints and state of
            any other configuration found on disk are discarded, never mixed in.
        device: resolved by the caller (the stage claims GPUs).
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
    checkpoint_dir, state_path = Path(checkpoint_dir), Path(state_path)
    snapshot_dir = Path(snapshot_dir) if snapshot_dir is not None else None
    if snapshot_dir is not None:
        snapshot_dir.mkdir(parents=True, exist_ok=True)  # a DVC output, even while it holds none
    finished = _finished_run(checkpoint_dir, config.epochs, training_hash)
    if finished is not None:  # e.g. checkpoints restored by `dvc checkout`, without their resume state
        log(f"all {config.epochs} epochs of this configuration are in {checkpoint_dir}; nothing to train")
        return TrainResult(
            losses=finished,
            trained_epochs=[],
            images_per_s=float("nan"),
            checkpoints=list_checkpoints(checkpoint_dir),
        )
    state = _load_state(state_path, training_hash)
    # A finished run with holes whose resume state is gone (it is not in DVC's cache, so
    # `dvc pull` brings the checkpoints and snapshots without it): refill, never retrain.
    finished_without_state = state is None and _is_ours(
        checkpoint_path(checkpoint_dir, config.epochs), training_hash
    )
    if state is not None:
        last_finished = int(state["epoch"])
    else:
        last_finished = config.epochs if finished_without_state else 0
    holes = _remove_stale_checkpoints(checkpoint_dir, last_finished, training_hash, log)
    _remove_stale_snapshots(snapshot_dir, last_finished, training_hash, log)
    if config.method == "supervised" and labels is None:
        raise ParamsError(f"train.method: {config.method} trains on labelled images; none were given")
    run = _TrainingRun(
        images,
        labels,
        config,
        aug=aug,
        seed=seed,
        image_size=image_size,
        checkpoint_dir=checkpoint_dir,
        state_path=state_path,
        snapshot_dir=snapshot_dir,
        training_hash=training_hash,
        device=device,
        on_step=on_step,
        log=log,
    )
    if holes and (state is not None or finished_without_state):
        run.refill(holes, last_finished, state)
    if finished_without_state:  # refilled above: the run is finished
        return TrainResult(
            losses=_finished_run(checkpoint_dir, config.epochs, training_hash) or {},
            trained_epochs=[],
            images_per_s=float("nan"),
            checkpoints=list_checkpoints(checkpoint_dir),
        )

    model, optimizer, scheduler = run.fresh_model()
    losses: dict[int, float] = {}
    if state is not None:
        model.load_state_dict(state["model"])
        # Placed first: the optimizer puts its loaded state (momentum) where the parameters are.
        _place(model, device)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        losses = {int(k): float(v) for k, v in state["losses"].items()}
        log(f"resuming after epoch {last_finished} from {state_path}")
    else:
        run.save(run.initial_weights(model), 0, None)

    trained: list[int] = []
    run.train_seconds = 0.0  # a replay above is not this run's throughput

    def epoch_done(epoch: int, loss: float) -> None:
        losses[epoch] = loss
        run.save(_backbone_weights(model), epoch, loss)
        run.save_state(model, optimizer, scheduler, epoch, losses)
        trained.append(epoch)
        on_epoch_end(epoch, loss)

    run.run_epochs(model, optimizer, scheduler, range(last_finished + 1, config.epochs + 1), epoch_done)
    seen_images = len(trained) * (len(run.dataset) // config.batch_size) * config.batch_size
    return TrainResult(
        losses=losses,
        trained_epochs=trained,
        images_per_s=seen_images / run.train_seconds if trained else float("nan"),
        checkpoints=list_checkpoints(checkpoint_dir),
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
    for name, tensor in _tensors(model.state_dict()).items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise _diverged(f"the weights {name} are not finite", epoch, None, config)


def _train_one_epoch(
    model: Learner,
    dataset: Views,
    optimizer: Optimizer,
    config: TrainParams,
    device: torch.device,
    seed: int,
    epoch: int,
    on_step: Callable[[int, float], None],
) -> float:
    """One pass over ``dataset``; returns the mean loss. Seeded from (seed, epoch).

    Raises:
        TrainingDiverged: at the first step whose loss is NaN or infinite.
    """
    epoch_seed = _epoch_seed(seed, epoch)
    seed_everything(epoch_seed)  # augmentations in the main process (num_workers=0)
    loader = torch.utils.data.DataLoader(
        dataset,
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
        on_step(batches, value)
    return total / max(batches, 1)
