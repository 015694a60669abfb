"""What a training call does, from the checkpoints, resume state and snapshots on disk (no training)."""

import torch

from protoviz_core.training.checkpoints import CHECKPOINT_FORMAT, checkpoint_path, list_checkpoints
from protoviz_core.training.plan import (
    STATE_FORMAT,
    Finished,
    Fresh,
    Refill,
    Resume,
    TrainingFiles,
    list_snapshots,
    plan_training,
    remove_stale,
    snapshot_path,
)


def _files(tmp_path, snapshots=True):
    (tmp_path / "checkpoints").mkdir(exist_ok=True)
    return TrainingFiles(
        tmp_path / "checkpoints", tmp_path / "state.pt", tmp_path / "snapshots" if snapshots else None, "h"
    )


def _checkpoint(files, epoch, training_hash="h"):
    loss = None if epoch == 0 else 1.0 / epoch
    checkpoint = {"format": CHECKPOINT_FORMAT, "training_hash": training_hash, "epoch": epoch, "loss": loss}
    torch.save({**checkpoint, "backbone": {}}, checkpoint_path(files.checkpoint_dir, epoch))


def _state(path, epoch, training_hash="h"):
    path.parent.mkdir(exist_ok=True)
    torch.save({"format": STATE_FORMAT, "training_hash": training_hash, "epoch": epoch, "losses": {}}, path)


def test_nothing_on_disk_is_a_fresh_run(tmp_path):
    assert plan_training(_files(tmp_path), epochs=3) == Fresh()
    assert Fresh.last_finished == 0


def test_every_checkpoint_of_this_configuration_is_a_finished_run_whatever_the_state(tmp_path):
    files = _files(tmp_path)
    for epoch in range(4):
        _checkpoint(files, epoch)
    _state(files.state_path, 1)  # an older resume state changes nothing
    assert plan_training(files, epochs=3) == Finished({1: 1.0, 2: 0.5, 3: 1 / 3})


def test_a_resume_state_resumes_and_names_the_holes_before_it(tmp_path):
    files = _files(tmp_path)
    for epoch in (1, 3, 4):  # 0 missing, 2 of another configuration, 4 past the state
        _checkpoint(files, epoch)
    _checkpoint(files, 2, training_hash="other")
    _state(files.state_path, 3)
    plan = plan_training(files, epochs=5)
    assert isinstance(plan, Resume) and plan.last_finished == 3 and plan.holes == (0, 2)


def test_a_state_of_another_configuration_is_ignored(tmp_path):
    files = _files(tmp_path)
    _checkpoint(files, 0)
    _state(files.state_path, 1, training_hash="other")
    assert plan_training(files, epochs=3) == Fresh()


def test_a_finished_run_without_its_resume_state_is_refilled(tmp_path):
    """As after `dvc pull` in a fresh clone: the checkpoints and snapshots, not the uncached state."""
    files = _files(tmp_path)
    for epoch in (1, 2, 4):
        _checkpoint(files, epoch)
    assert plan_training(files, epochs=4) == Refill(last_finished=4, holes=(0, 3))


def test_remove_stale_keeps_only_what_the_plan_builds_on(tmp_path):
    files = _files(tmp_path)
    for epoch in range(4):
        _checkpoint(files, epoch)
    _checkpoint(files, 1, training_hash="other")
    (files.checkpoint_dir / ".epoch_0002.pt.abcd1234.tmp").write_bytes(b"killed mid-write")
    for epoch in (1, 2, 3):
        _state(snapshot_path(files.snapshot_dir, epoch), epoch)
    _state(snapshot_path(files.snapshot_dir, 1), 1, training_hash="other")
    lines = []
    remove_stale(files, keep_up_to=2, log=lines.append)
    assert list(list_checkpoints(files.checkpoint_dir)) == [0, 2]
    assert list(list_snapshots(files.snapshot_dir)) == [2]
    assert not list(files.checkpoint_dir.glob(".*.tmp"))
    assert len(lines) == 5  # the leftover, checkpoints 1 and 3, snapshots 1 and 3


def test_list_snapshots_reads_only_state_files(tmp_path):
    assert list_snapshots(None) == {} and list_snapshots(tmp_path / "absent") == {}
    for name in ("state_0002.pt", "state_0010.pt", "state_x.pt", "other.pt"):
        (tmp_path / name).write_bytes(b"")
    assert list_snapshots(tmp_path) == {2: tmp_path / "state_0002.pt", 10: tmp_path / "state_0010.pt"}
