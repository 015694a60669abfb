import pytest
import torch

from protoviz_core.training.checkpoints import (
    CheckpointError,
    checkpoint_identity,
    choose_epochs,
    list_checkpoints,
    read_checkpoint,
    require_checkpoints,
)


def test_the_trained_runs_checkpoints_are_listed_read_and_identified(trained_checkpoints):
    assert list(trained_checkpoints) == [0, 1, 2]
    meta = read_checkpoint(trained_checkpoints[1], mmap=True)
    assert meta["epoch"] == 1 and meta["arch"] == "resnet18"
    assert checkpoint_identity(trained_checkpoints[1]) == f"{meta['training_hash']}:1"
    assert checkpoint_identity(trained_checkpoints[0]) != checkpoint_identity(trained_checkpoints[1])


def test_missing_truncated_and_foreign_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="no epoch_XXXX.pt checkpoints; run the train stage"):
        require_checkpoints(tmp_path)
    (tmp_path / "epoch_0003.pt").write_bytes(b"garbage")
    (tmp_path / "notes.pt").write_bytes(b"")
    assert list(list_checkpoints(tmp_path)) == [3]
    with pytest.raises(CheckpointError, match="epoch_0003.pt: unreadable checkpoint"):
        read_checkpoint(tmp_path / "epoch_0003.pt")
    torch.save({"weights": torch.ones(1)}, tmp_path / "epoch_0004.pt")
    with pytest.raises(CheckpointError, match="epoch_0004.pt: not a protoviz checkpoint"):
        checkpoint_identity(tmp_path / "epoch_0004.pt")


@pytest.mark.parametrize(
    "available, every, expected",
    [
        ([0, 1, 2, 3, 4], 1, [0, 1, 2, 3, 4]),
        ([0, 1, 2, 3, 4], 2, [0, 2, 4]),
        ([0, 1, 2, 3, 4, 5], 2, [0, 2, 4, 5]),
        ([3, 4, 5], 10, [3, 5]),
        ([], 3, []),
    ],
)
def test_a_stride_of_epochs_keeps_the_first_and_the_last(available, every, expected):
    assert choose_epochs(available, every) == expected


def test_choose_epochs_takes_all_a_stride_or_a_list():
    assert choose_epochs([0, 1, 2, 3], "all") == [0, 1, 2, 3]
    assert choose_epochs([0, 1, 2, 3], 2) == [0, 2, 3]
    assert choose_epochs([0, 1, 2, 3], [3, 1, 1]) == [1, 3]
    with pytest.raises(ValueError, match=r"report.montage_epochs: epochs \[7\]"):
        choose_epochs([0, 1, 2, 3], [1, 7], key="report.montage_epochs")


def test_a_checkpoint_copied_over_another_epoch_is_refused_by_every_reader(tmp_path, trained_checkpoints):
    import shutil

    for epoch, path in trained_checkpoints.items():
        shutil.copy(path, tmp_path / path.name)
    shutil.copy(trained_checkpoints[1], tmp_path / "epoch_0002.pt")  # valid file, wrong content
    for read in (read_checkpoint, checkpoint_identity, require_checkpoints):
        with pytest.raises(
            CheckpointError, match=r"epoch_0002.pt: holds epoch 1, not the epoch its name says"
        ):
            read(tmp_path / "epoch_0002.pt" if read is not require_checkpoints else tmp_path)


def test_a_checkpoint_of_another_training_run_is_not_mixed_in(tmp_path, trained_checkpoints):
    import shutil

    for epoch, path in trained_checkpoints.items():
        shutil.copy(path, tmp_path / path.name)
    foreign = torch.load(trained_checkpoints[2], weights_only=True)
    torch.save({**foreign, "training_hash": "another run"}, tmp_path / "epoch_0002.pt")
    with pytest.raises(
        CheckpointError, match="epoch_0002.pt: from another training configuration than epoch_0000"
    ):
        require_checkpoints(tmp_path)
