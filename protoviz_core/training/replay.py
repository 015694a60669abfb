"""Making lost checkpoints of a finished range again, by replaying training up to them.

A checkpoint missing or damaged inside the finished range (``0..`` the last finished epoch)
is made again rather than left as a hole. Every random choice of epoch ``e`` is seeded from
``(seed, e)`` (:mod:`protoviz_core.training.loop`), so training the same epochs again from the same
state gives the same weights on the same device. The replay starts from the newest *state
snapshot* before the hole (:mod:`protoviz_core.training.plan`), or from the seeded initial
weights, so it costs at most ``train.state_every`` + 1 epochs instead of the whole run.

Nothing is written unless the replay reproduces the run: it is checked against every intact
checkpoint it passes and one epoch past its last hole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from protoviz_core.training.checkpoints import CheckpointError, checkpoint_path, read_checkpoint
from protoviz_core.training.plan import Log, Refill, Resume, TrainingFiles, list_snapshots, load_state

if TYPE_CHECKING:
    from protoviz_core.training.loop import TrainingRun

    StartRun = Callable[[dict | None], TrainingRun]  # a run at a resume state, or fresh for None
    SaveCheckpoint = Callable[[int, dict[str, torch.Tensor], float | None], None]  # (epoch, weights, loss)


def flat_tensors(state: dict) -> dict[str, torch.Tensor]:
    """A state dict's tensors, with a learner's extra state (MoCo's memory bank) flattened in."""
    flat = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{inner}": tensor for inner, tensor in value.items()})
        else:
            flat[key] = value
    return flat


def same_weights(saved: dict, replayed: dict) -> bool:
    """Equal up to float32 rounding (a replay on the same device and thread count is usually bit-exact)."""
    saved, replayed = flat_tensors(saved), flat_tensors(replayed)
    return saved.keys() == replayed.keys() and all(
        torch.allclose(saved[k].float(), replayed[k].float(), rtol=1e-4, atol=1e-6) for k in saved
    )


def replay_segments(
    holes: Iterable[int], last_finished: int, snapshots: Iterable[int]
) -> list[tuple[int, int]]:
    """(first hole, last epoch to replay) of each replay that ``holes`` need.

    A hole's replay runs one epoch past it (to check it), from the newest of ``snapshots``
    (epochs) before it; a hole that an earlier replay passes on its way, or whose snapshot lies
    before where that replay ends, joins that replay (starting again would cost more).
    """
    snapshots = list(snapshots)
    segments: list[tuple[int, int]] = []
    for hole in sorted(holes):
        start = max((e for e in snapshots if e < hole), default=0)
        end = min(hole + 1, last_finished)
        if segments and start < segments[-1][1]:
            segments[-1] = (segments[-1][0], max(segments[-1][1], end))
        else:
            segments.append((hole, end))
    return segments


def replay_start(first_hole: int, files: TrainingFiles, start_run: StartRun, log: Log) -> TrainingRun:
    """The run a replay up to ``first_hole`` begins with: at the newest snapshot before it whose
    backbone is the checkpoint of its epoch (a snapshot that is not would replay another run),
    else fresh at the initial weights (``run.epoch`` says which)."""
    for epoch, path in reversed(list_snapshots(files.snapshot_dir).items()):
        if epoch >= first_hole:
            continue
        state = load_state(path, files.training_hash)
        backbone = {
            k.removeprefix("backbone."): v
            for k, v in (state or {}).get("model", {}).items()
            if k.startswith("backbone.")
        }
        checkpoint = read_checkpoint(checkpoint_path(files.checkpoint_dir, epoch))["backbone"]
        if state is None or not same_weights(checkpoint, backbone):
            log(f"{path}: not the state its epoch's checkpoint was saved from; not replaying from it")
            continue
        return start_run(state)
    return start_run(None)


def refill_holes(
    plan: Resume | Refill,
    files: TrainingFiles,
    *,
    start_run: StartRun,
    save_checkpoint: SaveCheckpoint,
    log: Log,
) -> None:
    """Make the missing checkpoints ``plan.holes`` again, by replaying training: for each group
    of holes (:func:`replay_segments`) from the newest valid state snapshot before it
    (:func:`replay_start`), or from epoch 0. Holes at 0 and 90 of 100 epochs with
    ``state_every: 10`` replay epoch 1, then epochs 81..91.

    Each replay goes one epoch past its last hole and is checked there against the checkpoint
    on disk (or against the resume state when the last hole is the last finished epoch), and
    against every intact checkpoint on the way; only when all agree are the missing
    checkpoints written.

    A missing epoch 0 is made again from the seeded initial weights and a new measurement of
    its BatchNorm statistics, which nothing on disk can check: on a CPU it is bit-exact
    (tested); on a GPU it matches up to the device's rounding.

    Raises:
        CheckpointError: the replay does not reproduce the run (a non-deterministic device).
    """
    holes, last_finished = list(plan.holes), plan.last_finished
    log(
        f"{files.checkpoint_dir}: epochs {holes} are missing inside the finished run 0..{last_finished}; "
        f"replaying training to make them again"
    )
    reference = plan.state if isinstance(plan, Resume) else None  # a Refill's resume state is gone
    made: dict[int, tuple[dict[str, torch.Tensor], float | None]] = {}
    for first, end in replay_segments(holes, last_finished, list_snapshots(files.snapshot_dir)):
        run = replay_start(first, files, start_run, log)
        origin = f"epoch {run.epoch}'s state snapshot" if run.epoch else "the initial weights"
        log(f"{files.checkpoint_dir}: replaying epochs {run.epoch + 1}..{end} from {origin}")
        if first == 0:
            made[0] = (run.initial_weights(), None)
        for epoch, loss in run.train_until(end):
            if epoch in holes:
                made[epoch] = (run.backbone_weights(), loss)
                continue
            path = checkpoint_path(files.checkpoint_dir, epoch)
            if not same_weights(read_checkpoint(path)["backbone"], run.backbone_weights()):
                raise _not_reproduced(path, run, holes, files)
        # No checkpoint after the last hole: the resume state is the reference.
        if end in holes and (reference is None or not same_weights(reference["model"], run.model_weights())):
            raise _not_reproduced(files.state_path, run, holes, files)
    for epoch, (weights, loss) in sorted(made.items()):
        save_checkpoint(epoch, weights, loss)


def _not_reproduced(
    reference: Path, run: TrainingRun, holes: list[int], files: TrainingFiles
) -> CheckpointError:
    return CheckpointError(
        f"{reference}: replaying training on {run.device.type} does not reproduce it, "
        f"so the missing epochs {holes} cannot be made again identically; restore them with "
        f"`dvc checkout {files.checkpoint_dir}`, or delete {files.checkpoint_dir} "
        f"and {files.state_path} to retrain"
    )
