import pytest
import torch

from protoviz_core.pipeline.config import TRAINING_VERSION, Params
from protoviz_core.training.checkpoints import (
    CheckpointError,
    list_checkpoints,
    load_backbone,
    read_checkpoint,
)
from protoviz_core.training.loop import TrainingDiverged, train_learner
from protoviz_core.training.plan import list_snapshots, snapshot_path
from tests.helpers import TINY_IMAGE_SIZE, tiny_params


def _train(
    images,
    config,
    directory,
    training_hash="h",
    log=lambda message: None,
    aug="clrjit",
    device="cpu",
    **kwargs,
):
    return train_learner(
        images,
        config,
        aug=aug,
        seed=1,
        image_size=TINY_IMAGE_SIZE,
        checkpoint_dir=directory / "checkpoints",
        state_path=directory / "state.pt",
        training_hash=training_hash,
        device=torch.device(device),
        log=log,
        **kwargs,
    )


def _weights(path):
    return torch.load(path, weights_only=True)["backbone"]


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)


def test_e_epochs_give_e_plus_1_loadable_checkpoints(tmp_path, tiny_images, tiny_train):
    result = _train(tiny_images, tiny_train, tmp_path)
    assert list(result.checkpoints) == [0, 1, 2]
    assert result.trained_epochs == [1, 2] and set(result.losses) == {1, 2}
    for epoch, path in result.checkpoints.items():
        raw = torch.load(path, weights_only=True)  # no pickled code needed
        assert raw["epoch"] == epoch and raw["arch"] == "resnet18" and raw["training_hash"] == "h"
        backbone, meta = load_backbone(path)
        assert not backbone.training and meta["image_size"] == TINY_IMAGE_SIZE
        assert backbone(torch.rand(1, 3, 24, 24)).shape == (1, 512)
    # Training changed the weights.
    before, after = _weights(result.checkpoints[0]), _weights(result.checkpoints[2])
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])


def test_epoch_0_is_the_initial_weights_with_batchnorm_statistics_measured_on_the_images(
    tmp_path, tiny_images, tiny_train
):
    from protoviz_core.models.backbones import NORMALIZE, build_backbone
    from protoviz_core.training.loop import seed_everything

    result = _train(tiny_images, tiny_train.model_copy(update={"epochs": 1}), tmp_path)
    saved = _weights(result.checkpoints[0])
    seed_everything(1)  # the training seed: the same initial weights
    fresh = build_backbone()
    placeholders = fresh.state_dict()
    for key, value in saved.items():
        if "running_" in key:
            assert not torch.equal(value, placeholders[key]), key  # measured, not the 0/1 placeholders
        elif "num_batches_tracked" not in key:
            assert torch.equal(value, placeholders[key]), key  # no weight changed
    # The statistics are those of the un-augmented, normalised images: one pass in train mode, in
    # training-size batches, averaging the batches' statistics.
    mean = torch.tensor(NORMALIZE["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(NORMALIZE["std"]).view(1, 3, 1, 1)
    fresh.bn1.reset_running_stats()
    fresh.bn1.momentum = None  # a cumulative average over the batches
    with torch.no_grad():
        # Full batches, as in training
        full = len(tiny_images) // tiny_train.batch_size * tiny_train.batch_size
        for start in range(0, full, tiny_train.batch_size):
            batch = torch.from_numpy(tiny_images[start : start + tiny_train.batch_size]).float() / 255
            fresh.train()((batch - mean) / std)
    torch.testing.assert_close(saved["bn1.running_mean"], fresh.bn1.running_mean)
    torch.testing.assert_close(saved["bn1.running_var"], fresh.bn1.running_var)


class _Killed(Exception):
    pass


def test_resume_trains_only_missing_epochs_and_matches_an_uninterrupted_run(
    tmp_path, tiny_images, tiny_train
):
    config = tiny_train.model_copy(update={"epochs": 3})
    uninterrupted = _train(tiny_images, config, tmp_path / "straight")

    def crash_after_epoch_1(epoch, loss):
        if epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        _train(tiny_images, config, tmp_path / "resumed", on_epoch_end=crash_after_epoch_1)
    first = list_checkpoints(tmp_path / "resumed" / "checkpoints")
    assert list(first) == [0, 1]
    stamp = first[1].stat().st_mtime_ns

    resumed = _train(tiny_images, config, tmp_path / "resumed")
    assert resumed.trained_epochs == [2, 3]
    assert resumed.checkpoints[1].stat().st_mtime_ns == stamp  # epoch 1 was not retrained
    assert resumed.losses == pytest.approx(uninterrupted.losses, rel=1e-4)
    _assert_same_weights(_weights(resumed.checkpoints[3]), _weights(uninterrupted.checkpoints[3]))


def test_finished_run_trains_nothing_again(tmp_path, tiny_images, tiny_train):
    _train(tiny_images, tiny_train, tmp_path)
    again = _train(tiny_images, tiny_train, tmp_path)
    assert again.trained_epochs == [] and list(again.checkpoints) == [0, 1, 2]


def test_complete_checkpoints_without_resume_state_are_kept(tmp_path, tiny_images, tiny_train):
    first = _train(tiny_images, tiny_train, tmp_path)
    (tmp_path / "state.pt").unlink()  # as after `dvc checkout` of another experiment and back
    stamps = {e: p.stat().st_mtime_ns for e, p in first.checkpoints.items()}
    again = _train(tiny_images, tiny_train, tmp_path, snapshot_dir=tmp_path / "snapshots")
    assert again.trained_epochs == [] and again.losses == pytest.approx(first.losses)
    assert (tmp_path / "snapshots").is_dir()  # a DVC output: made even when nothing is trained
    assert {e: p.stat().st_mtime_ns for e, p in again.checkpoints.items()} == stamps


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_hole_in_the_finished_run_is_made_again_identically(tmp_path, tiny_images, tiny_train, damage):
    config = tiny_train.model_copy(update={"epochs": 3})
    first = _train(tiny_images, config, tmp_path)
    saved = {epoch: _weights(path) for epoch, path in first.checkpoints.items()}
    last_stamp = first.checkpoints[3].stat().st_mtime_ns
    for epoch in (0, 2):  # the initial weights and a trained epoch
        path = first.checkpoints[epoch]
        path.write_bytes(path.read_bytes()[:1000]) if damage == "truncate" else path.unlink()

    lines = []
    again = _train(tiny_images, config, tmp_path, log=lines.append)
    assert list(again.checkpoints) == [0, 1, 2, 3] and again.trained_epochs == []
    assert any("epochs [0, 2] are missing" in line and "replaying" in line for line in lines)
    for epoch, weights in saved.items():
        _assert_same_weights(_weights(again.checkpoints[epoch]), weights)
    assert read_checkpoint(again.checkpoints[2])["loss"] == pytest.approx(first.losses[2], rel=1e-4)
    assert again.checkpoints[3].stat().st_mtime_ns == last_stamp  # only the holes were written


def test_a_hole_replays_from_the_newest_state_snapshot_before_it(tmp_path, tiny_images, tiny_train):
    """epochs 4, state_every 2: the state after epoch 2 is kept (not after 4, the resume state's);
    a lost epoch 3 replays epochs 3 and 4 only, to the same weights."""
    config = tiny_train.model_copy(update={"epochs": 4, "state_every": 2})
    first = _train(tiny_images, config, tmp_path, snapshot_dir=tmp_path / "snapshots")
    assert list(list_snapshots(tmp_path / "snapshots")) == [2]
    saved = _weights(first.checkpoints[3])
    first.checkpoints[3].unlink()

    lines, replayed = [], set()
    again = _train(
        tiny_images,
        config,
        tmp_path,
        snapshot_dir=tmp_path / "snapshots",
        log=lines.append,
        on_step=lambda epoch, step, loss: replayed.add(epoch),
    )
    assert replayed == {3, 4} and again.trained_epochs == []
    assert any("replaying epochs 3..4 from epoch 2's state snapshot" in line for line in lines)
    _assert_same_weights(_weights(again.checkpoints[3]), saved)


def test_holes_far_apart_replay_each_from_its_own_start_and_a_lost_resume_state_retrains_nothing(
    tmp_path, tiny_images, tiny_train
):
    """epochs 6, state_every 2 (snapshots 2 and 4). Holes at 0 and 5, and the resume state gone,
    as after `dvc pull` in a fresh clone (the state is not cached): epoch 1 is replayed from the
    initial weights, epochs 5..6 from the snapshot of 4; everything else is kept."""
    config = tiny_train.model_copy(update={"epochs": 6, "state_every": 2})
    first = _train(tiny_images, config, tmp_path, snapshot_dir=tmp_path / "snapshots")
    assert list(list_snapshots(tmp_path / "snapshots")) == [2, 4]
    saved = {epoch: _weights(path) for epoch, path in first.checkpoints.items()}
    for epoch in (0, 5):
        first.checkpoints[epoch].unlink()
    (tmp_path / "state.pt").unlink()
    stamps = {e: p.stat().st_mtime_ns for e, p in first.checkpoints.items() if p.exists()}

    replayed, lines = [], []
    again = _train(
        tiny_images,
        config,
        tmp_path,
        snapshot_dir=tmp_path / "snapshots",
        log=lines.append,
        on_step=lambda epoch, step, loss: replayed.append(epoch),
    )
    assert sorted(set(replayed)) == [1, 5, 6] and again.trained_epochs == []
    assert any("replaying epochs 5..6 from epoch 4's state snapshot" in line for line in lines)
    assert list(again.checkpoints) == list(range(7)) and list(list_snapshots(tmp_path / "snapshots")) == [
        2,
        4,
    ]
    for epoch, weights in saved.items():
        _assert_same_weights(_weights(again.checkpoints[epoch]), weights)
    assert {e: p.stat().st_mtime_ns for e, p in again.checkpoints.items() if e in stamps} == stamps
    assert again.losses == pytest.approx(first.losses)


def test_a_snapshot_that_is_not_its_checkpoints_state_is_passed_over(tmp_path, tiny_images, tiny_train):
    config = tiny_train.model_copy(update={"epochs": 4, "state_every": 2})
    first = _train(tiny_images, config, tmp_path, snapshot_dir=tmp_path / "snapshots")
    saved = _weights(first.checkpoints[3])
    snapshot = snapshot_path(tmp_path / "snapshots", 2)
    state = torch.load(snapshot, weights_only=True)
    state["model"]["backbone.conv1.weight"] += 1.0
    torch.save(state, snapshot)
    first.checkpoints[3].unlink()

    lines, replayed = [], set()
    again = _train(
        tiny_images,
        config,
        tmp_path,
        snapshot_dir=tmp_path / "snapshots",
        log=lines.append,
        on_step=lambda epoch, step, loss: replayed.add(epoch),
    )
    assert replayed == {1, 2, 3, 4}
    assert any("state_0002.pt: not the state its epoch's checkpoint was saved from" in line for line in lines)
    _assert_same_weights(_weights(again.checkpoints[3]), saved)


def test_snapshots_of_another_configuration_or_past_the_resume_state_are_removed(
    tmp_path, tiny_images, tiny_train
):
    config = tiny_train.model_copy(update={"epochs": 4, "state_every": 1})
    _train(tiny_images, config, tmp_path, snapshot_dir=tmp_path / "snapshots")
    assert list(list_snapshots(tmp_path / "snapshots")) == [1, 2, 3]
    other = tiny_train.model_copy(update={"epochs": 2, "state_every": 1, "lr": 0.01})
    lines = []
    _train(
        tiny_images,
        other,
        tmp_path,
        training_hash="other",
        snapshot_dir=tmp_path / "snapshots",
        log=lines.append,
    )
    assert list(list_snapshots(tmp_path / "snapshots")) == [1]
    assert torch.load(snapshot_path(tmp_path / "snapshots", 1), weights_only=True)["training_hash"] == "other"


def test_a_replay_that_does_not_reproduce_the_run_stops_with_the_fix(tmp_path, tiny_images, tiny_train):
    first = _train(tiny_images, tiny_train, tmp_path)
    raw = torch.load(first.checkpoints[1], weights_only=True)
    raw["backbone"]["conv1.weight"] += 1.0  # as if made on a device that does not replay exactly
    torch.save(raw, first.checkpoints[1])
    first.checkpoints[2].unlink()
    with pytest.raises(
        CheckpointError, match=r"epoch_0001.pt: replaying training on cpu does not reproduce.*dvc checkout"
    ):
        _train(tiny_images, tiny_train, tmp_path)


def test_a_hole_is_checked_against_the_epoch_after_it_and_nothing_is_written_on_a_mismatch(
    tmp_path, tiny_images, tiny_train
):
    config = tiny_train.model_copy(update={"epochs": 3})
    first = _train(tiny_images, config, tmp_path)
    raw = torch.load(first.checkpoints[2], weights_only=True)
    raw["backbone"]["conv1.weight"] += 1.0  # the epoch after the hole no longer matches a replay
    torch.save(raw, first.checkpoints[2])
    first.checkpoints[1].unlink()
    with pytest.raises(CheckpointError, match=r"epoch_0002.pt: replaying training on cpu does not reproduce"):
        _train(tiny_images, config, tmp_path)
    assert not first.checkpoints[1].exists()  # nothing unverified was written


def test_a_hole_at_the_last_epoch_is_checked_against_the_resume_state(tmp_path, tiny_images, tiny_train):
    first = _train(tiny_images, tiny_train, tmp_path)
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    state["model"]["backbone.conv1.weight"] += 1.0
    torch.save(state, tmp_path / "state.pt")
    first.checkpoints[2].unlink()
    with pytest.raises(CheckpointError, match=r"state.pt: replaying training on cpu does not reproduce"):
        _train(tiny_images, tiny_train, tmp_path)


def test_a_diverging_loss_stops_training_at_once_and_keeps_the_good_epochs(tmp_path, tiny_images, tiny_train):
    config = tiny_train.model_copy(update={"lr": 1e6})  # finite, but SGD diverges in the second epoch
    steps = []
    with pytest.raises(
        TrainingDiverged, match=r"the loss is nan at epoch 2, step 2;.*train.lr \(now 1e\+06\)"
    ):
        _train(tiny_images, config, tmp_path, on_step=lambda epoch, step, loss: steps.append((epoch, step)))
    assert steps[-1] == (2, 1)  # stopped within the step whose loss was not finite
    kept = list_checkpoints(tmp_path / "checkpoints")
    assert list(kept) == [0, 1]
    assert all(torch.isfinite(w).all() for w in _weights(kept[1]).values() if w.is_floating_point())
    assert torch.load(tmp_path / "state.pt", weights_only=True)["epoch"] == 1


def test_other_configuration_is_never_mixed_in(tmp_path, tiny_images, tiny_train):
    _train(tiny_images, tiny_train.model_copy(update={"epochs": 3}), tmp_path, training_hash="old")
    result = _train(tiny_images, tiny_train, tmp_path, training_hash="new")
    assert result.trained_epochs == [1, 2]
    assert list(result.checkpoints) == [0, 1, 2]  # old epoch 3 removed
    assert {read_checkpoint(p)["training_hash"] for p in result.checkpoints.values()} == {"new"}


def test_corrupt_and_foreign_checkpoints_are_named(tmp_path):
    truncated = tmp_path / "epoch_0001.pt"
    truncated.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(CheckpointError, match="epoch_0001.pt: unreadable"):
        load_backbone(truncated)
    foreign = tmp_path / "epoch_0002.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="epoch_0002.pt: not a protoviz checkpoint"):
        load_backbone(foreign)
    with pytest.raises(CheckpointError, match="epoch_0003.pt: checkpoint not found"):
        load_backbone(tmp_path / "epoch_0003.pt")


def test_checkpoint_of_another_architecture_is_named(tmp_path, tiny_images, tiny_train):
    path = _train(tiny_images, tiny_train.model_copy(update={"epochs": 0}), tmp_path).checkpoints[0]
    raw = torch.load(path, weights_only=True)
    raw["backbone"].pop("layer4.1.conv2.weight")
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="epoch_0000.pt: weights do not match 'resnet18'"):
        load_backbone(path)


def test_training_on_a_gpu_copies_pinned_batches_and_resumes(tmp_path, tiny_images, tiny_train):
    """The GPU branches on the suite's fake CUDA device: bfloat16 autocast, channels_last, pinned
    batches (a non-blocking copy from pageable memory would block), and a resume whose state
    was saved from device tensors."""
    from tests.fake_cuda import fake_cuda

    on_gpu = tiny_train.model_copy(update={"epochs": 1})
    with fake_cuda() as gpu:
        first = _train(tiny_images, on_gpu, tmp_path, device="cuda")
        resumed = _train(tiny_images, tiny_train, tmp_path, device="cuda")
    assert first.trained_epochs == [1] and resumed.trained_epochs == [2]
    assert gpu.blocking_copies == []
    for path in resumed.checkpoints.values():
        weights = torch.load(path, weights_only=True)["backbone"]  # loads on a machine without a GPU
        assert all(torch.isfinite(value.float()).all() for value in weights.values())
    # bfloat16 changes the numbers, not the training: the loss of a first epoch on 64 images
    # (ln(63) = 4.14 at chance)
    assert 3.0 < first.losses[1] < 4.3


# What the tiny run's two epochs give, per TRAINING_VERSION and aug: (loss of epoch 2, sum of
# epoch 0's measured bn1.running_var, sum of conv1's weights after epoch 2). Two epochs, so that
# the cosine schedule and epoch 0's BatchNorm measurement are covered too. A change of the loop,
# the model, its augmentations, the loss or the schedule moves these: bump TRAINING_VERSION with
# it and add the new values.
TRAINING_GOLDEN = {
    1: {
        "clrjit": (4.1056726, 3.1852453, -11.8361743),
        "keepclr": (3.5342630, 3.1852453, -10.1120519),
    }
}


@pytest.mark.parametrize("aug", ["clrjit", "keepclr"])
def test_training_behaviour_is_that_of_its_version(tmp_path, tiny_images, tiny_train, aug):
    assert TRAINING_VERSION in TRAINING_GOLDEN, "record this TRAINING_VERSION's golden values"
    result = _train(tiny_images, tiny_train.model_copy(update={"epochs": 2}), tmp_path, aug=aug)
    measured = (
        result.losses[2],
        float(_weights(result.checkpoints[0])["bn1.running_var"].double().sum()),
        float(_weights(result.checkpoints[2])["conv1.weight"].double().sum()),
    )
    # Tolerances well above float rounding over these four steps, well below any change of behaviour.
    assert measured == pytest.approx(TRAINING_GOLDEN[TRAINING_VERSION][aug], rel=1e-4), (
        f"training changed its checkpoints ({measured}) but not TRAINING_VERSION ({TRAINING_VERSION}): "
        f"bump it in protoviz_core/pipeline/config.py and record the new values"
    )


def test_identity_names_the_params_and_the_training_version_not_the_code_bytes():
    params = Params.model_validate(tiny_params())
    assert params.training_identity() == f"{params.training_hash()}-v{TRAINING_VERSION}"
    changed = params.model_copy(update={"seed": params.seed + 1})
    assert changed.training_identity() != params.training_identity()
