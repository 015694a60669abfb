"""What a training call does, decided from the files that earlier calls left on disk.

One configuration's training keeps three kinds of files (:class:`TrainingFiles`): a
checkpoint per epoch (:mod:`protoviz_core.training.checkpoints`), the *resume state* after the last
finished epoch (model, optimiser, scheduler and the losses so far), and *state snapshots*:
the resume state as it was after epochs ``train.state_every``, 2 x ``state_every``, ...,
where a replay of a lost checkpoint starts (:mod:`protoviz_core.training.replay`).

:func:`plan_training` reads them (and writes nothing) to pick one of four plans:

- :class:`Finished`: checkpoints 0..E of this configuration are all there; nothing to do.
- :class:`Fresh`: neither a resume state nor a finished run: train from the initial weights.
- :class:`Resume`: a resume state after epoch e: refill the checkpoints missing in 0..e,
  then train epochs e+1..E.
- :class:`Refill`: the last checkpoint is there but the resume state is gone (DVC does not
  cache it, so ``dvc pull`` brings the checkpoints and snapshots without it) and some
  checkpoints are missing: make those again, never retrain.

:func:`remove_stale` then deletes the files the plan does not keep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from protoviz_core.infra.atomic import load_or_none, remove_leftovers
from protoviz_core.training.checkpoints import (
    CheckpointError,
    checkpoint_path,
    list_checkpoints,
    read_checkpoint,
)

STATE_FORMAT = "protoviz.train_state/1"
SNAPSHOT_NAME = "state_{epoch:04d}.pt"

Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainingFiles:
    """Where one configuration's training keeps its files, and the identity they must carry."""

    checkpoint_dir: Path  # epoch_0000.pt (initial weights) .. epoch_{E:04d}.pt
    state_path: Path  # the resume state after the last finished epoch
    snapshot_dir: Path | None  # state_XXXX.pt snapshots; None keeps none
    training_hash: str  # files of any other configuration are discarded, never mixed in


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


def load_state(state_path: Path, training_hash: str, mmap: bool = False) -> dict | None:
    """The resume state (or a snapshot of it), or None if absent, unreadable or from another configuration."""
    state = load_or_none(state_path, mmap=mmap)  # a corrupt state only costs retraining
    if (
        not isinstance(state, dict)
        or state.get("format") != STATE_FORMAT
        or state.get("training_hash") != training_hash
    ):
        return None
    return state


def is_ours(path: Path, training_hash: str) -> bool:
    """Whether ``path`` is a readable checkpoint of this configuration."""
    try:
        return read_checkpoint(path, mmap=True)["training_hash"] == training_hash
    except CheckpointError:
        return False


def finished_losses(directory: Path, epochs: int, training_hash: str) -> dict[int, float] | None:
    """Per-epoch losses (1..epochs) when checkpoints 0..epochs of this configuration all exist, else None."""
    found = list_checkpoints(directory)
    if set(range(epochs + 1)) - set(found):
        return None
    losses = {}
    for epoch in range(epochs + 1):
        try:
            meta = read_checkpoint(found[epoch], mmap=True)  # the metadata only, not the weights
        except CheckpointError:
            return None
        if meta["training_hash"] != training_hash:
            return None
        if epoch > 0:
            losses[epoch] = float(meta.get("loss") or float("nan"))
    return losses


@dataclass(frozen=True)
class Finished:
    """Checkpoints 0..E of this configuration are all on disk (e.g. restored by ``dvc checkout``,
    without their resume state): nothing to train or refill."""

    losses: dict[int, float]  # mean training loss per epoch 1..E, read from the checkpoints


@dataclass(frozen=True)
class Fresh:
    """Nothing of this configuration to continue: train every epoch from the initial weights."""

    last_finished: ClassVar[int] = 0


@dataclass(frozen=True)
class Resume:
    """A resume state after epoch ``last_finished``: refill ``holes``, then train on from it."""

    state: dict  # the resume state (:func:`load_state`)
    holes: tuple[int, ...]  # epochs in 0..last_finished without a checkpoint of this configuration

    @property
    def last_finished(self) -> int:
        return int(self.state["epoch"])


@dataclass(frozen=True)
class Refill:
    """A finished run (its last checkpoint is there) whose resume state is gone: make ``holes``
    again by replaying training, and train nothing else."""

    last_finished: int  # train.epochs
    holes: tuple[int, ...]


Plan = Finished | Fresh | Resume | Refill


def plan_training(files: TrainingFiles, epochs: int) -> Plan:
    """What training ``epochs`` epochs into ``files`` has left to do. Reads, never writes."""
    losses = finished_losses(files.checkpoint_dir, epochs, files.training_hash)
    if losses is not None:
        return Finished(losses)
    state = load_state(files.state_path, files.training_hash)
    if state is not None:
        return Resume(state, _holes(files, int(state["epoch"])))
    if is_ours(checkpoint_path(files.checkpoint_dir, epochs), files.training_hash):
        return Refill(epochs, _holes(files, epochs))
    return Fresh()


def _holes(files: TrainingFiles, last_finished: int) -> tuple[int, ...]:
    """The epochs in ``0..last_finished`` without a readable checkpoint of this configuration."""
    found = list_checkpoints(files.checkpoint_dir)
    return tuple(
        epoch
        for epoch in range(last_finished + 1)
        if epoch not in found or not is_ours(found[epoch], files.training_hash)
    )


def remove_stale(files: TrainingFiles, keep_up_to: int, log: Log) -> None:
    """Delete what a plan that keeps epochs ``0..keep_up_to`` must not build on: checkpoints and
    snapshots of later epochs (an unfinished run's), of other configurations, damaged files,
    and the temporary files of killed writes. Snapshots go too because a replay would start
    from them; checkpoints because a later stage would read them."""
    for leftover in remove_leftovers(files.checkpoint_dir):
        log(f"removing {leftover}: left by a write that was killed")
    for epoch, path in list_checkpoints(files.checkpoint_dir).items():
        if epoch > keep_up_to:
            log(f"removing {path}: from an unfinished run")
            path.unlink()
        elif not is_ours(path, files.training_hash):
            log(f"removing {path}: damaged, holding another epoch, or from another configuration")
            path.unlink()
    directory = files.snapshot_dir
    for leftover in remove_leftovers(directory) if directory is not None and directory.is_dir() else []:
        log(f"removing {leftover}: left by a write that was killed")
    for epoch, path in list_snapshots(directory).items():
        state = load_state(path, files.training_hash, mmap=True)
        if epoch > keep_up_to or state is None or int(state["epoch"]) != epoch:
            log(f"removing {path}: from an unfinished run, damaged, or from another configuration")
            path.unlink()
