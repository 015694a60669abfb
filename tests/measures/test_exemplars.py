"""Natural exemplars: the pool, the sample, each unit's top images, their files and checks."""

import numpy as np
import pytest
import torch

from protoviz_core.data.stl10 import SplitWriter
from protoviz_core.engine.units import layer_reader
from protoviz_core.infra.checks import DegenerateError
from protoviz_core.infra.work import run_work
from protoviz_core.measures.exemplars import (
    ExemplarsError,
    ExemplarSet,
    Pool,
    best_natural,
    exemplar_work,
    read_exemplars,
    sample_positions,
    top_exemplars,
)
from protoviz_core.models.backbones import NORMALIZE, build_backbone
from protoviz_core.training.checkpoints import checkpoint_identity, load_backbone

SIZE = 16


def _pool(root, counts=(5, 7), size=SIZE) -> Pool:
    """Two splits whose image i of split s is filled with the value 10 * s + i (so each
    image says where it is)."""
    for number, (split, count) in enumerate(zip(("train", "unlabeled"), counts)):
        with SplitWriter(root, split) as writer:
            images = np.stack([np.full((3, size, size), 10 * number + i, np.uint8) for i in range(count)])
            writer.write(images, np.zeros(count, np.int64) if split == "train" else None)
    return Pool(root, ("train", "unlabeled"), size)


def test_pool_positions_run_through_the_splits_in_order(tmp_path):
    pool = _pool(tmp_path)
    assert pool.sizes() == [5, 7]
    assert pool.locate(np.array([0, 4, 5, 11])) == [
        ("train", 0),
        ("train", 4),
        ("unlabeled", 0),
        ("unlabeled", 6),
    ]
    images = pool.images([11, 0, 6])
    assert images.shape == (3, 3, SIZE, SIZE) and images[:, 0, 0, 0].tolist() == [16, 0, 11]
    with pytest.raises(ExemplarsError, match="pool position out of range 0..11"):
        pool.images([12])


def test_the_sample_is_fixed_by_its_seed_distinct_and_sorted():
    first, again, other = (
        sample_positions(100, 10, 0),
        sample_positions(100, 10, 0),
        sample_positions(100, 10, 1),
    )
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    assert len(set(first.tolist())) == 10 and np.all(np.diff(first) > 0) and first.max() < 100
    assert np.array_equal(sample_positions(7, None, 0), np.arange(7))
    assert np.array_equal(sample_positions(7, 50, 0), np.arange(7))


def _random_pool(root, count=40) -> Pool:
    rng = np.random.default_rng(0)
    with SplitWriter(root, "unlabeled") as writer:
        writer.write(rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8))
    return Pool(root, ("unlabeled",), 32)


@pytest.mark.parametrize("batch_size", [7, 64])
def test_top_exemplars_are_each_units_best_images_in_any_batching(tmp_path, batch_size):
    torch.manual_seed(0)
    model = build_backbone().eval()
    pool = _random_pool(tmp_path)
    positions = np.arange(3, 40, 2)  # a sample: every other image from 3 on
    found = top_exemplars(
        model, ["layer2", "layer4"], pool, positions, normalize=NORMALIZE, top_k=3, batch_size=batch_size
    )
    mean, std = (
        torch.tensor(NORMALIZE["mean"]).view(1, 3, 1, 1),
        torch.tensor(NORMALIZE["std"]).view(1, 3, 1, 1),
    )
    images = (torch.from_numpy(pool.images(positions)).float() / 255 - mean) / std
    for layer in ("layer2", "layer4"):
        with torch.no_grad(), layer_reader(model, layer) as read:
            features = read(images)
        row, column = (features.shape[2] - 1) // 2, (features.shape[3] - 1) // 2
        every = features[:, :, row, column].T  # (C, N): brute force over the sample
        expected, _ = every.topk(3, dim=1)
        assert found[layer]["activations"].shape == (features.shape[1], 3)
        assert torch.allclose(found[layer]["activations"], expected, atol=1e-5)
        # Each reported position gives its unit the reported activation (ties, e.g. at 0, may pick any image).
        column_of = {int(p): i for i, p in enumerate(positions)}
        at = torch.tensor([[column_of[int(p)] for p in row] for row in found[layer]["positions"]])
        assert torch.allclose(every.gather(1, at), found[layer]["activations"], atol=1e-5)
        assert (found[layer]["activations"] > 0).any()


def test_exemplar_files_resume_and_are_checked_against_their_checkpoint(trained_checkpoints, tmp_path):
    pool = Pool(trained_checkpoints[0].parents[2] / "data", ("train", "unlabeled"), 24)
    positions = sample_positions(sum(pool.sizes()), 30, 0)
    items = exemplar_work(
        dict(trained_checkpoints),
        pool,
        positions,
        ["layer1", "layer3"],
        top_k=4,
        batch_size=16,
        device=torch.device("cpu"),
    )
    assert [item.name for item in items] == ["e0000.pt", "e0001.pt", "e0002.pt"]
    run_work(items, tmp_path / "ex", log=lambda line: None)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ex").iterdir()}
    run_work(items, tmp_path / "ex", log=lambda line: None)  # complete: nothing is recomputed
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ex").iterdir()} == stamps
    found = read_exemplars(tmp_path / "ex", dict(trained_checkpoints))
    assert found[2]["checkpoint"] == checkpoint_identity(trained_checkpoints[2]) and found[2]["sample"] == 30
    assert found[2]["layers"]["layer3"]["activations"].shape == (256, 4)
    assert set(found[2]["layers"]["layer1"]["positions"].flatten().tolist()) <= set(positions.tolist())
    assert (
        best_natural(found[2], "layer3", [5, 0]).tolist()
        == found[2]["layers"]["layer3"]["activations"][[5, 0], 0].tolist()
    )
    with pytest.raises(ExemplarsError, match="no exemplars for layer2"):
        best_natural(found[2], "layer2", [0])
    with pytest.raises(ExemplarsError, match="e0002.pt: found on another checkpoint than"):
        read_exemplars(tmp_path / "ex", {2: trained_checkpoints[1]})

    # The report's view of them: opened over the same data set, refused over another.
    opened = ExemplarSet.open(tmp_path / "ex", pool.root, 24, [0, 2])
    values, where = opened.top(2, "layer3", [7])
    assert opened.top_k == 4 and opened.sample_size == 30 and values.shape == where.shape == (1, 4)
    other = tmp_path / "other"
    _pool(other, size=24)
    with pytest.raises(ExemplarsError, match="found on a data set of"):
        ExemplarSet.open(tmp_path / "ex", other, 24, [0])


def test_a_network_that_outputs_nothing_stops_the_exemplars(trained_checkpoints, tmp_path):
    backbone, meta = load_backbone(trained_checkpoints[1])
    for parameter in backbone.parameters():
        parameter.data.zero_()  # BatchNorm's shift too: every activation is 0
    path = tmp_path / "epoch_0001.pt"
    saved = torch.load(trained_checkpoints[1], weights_only=True)
    saved["backbone"] = backbone.state_dict()
    torch.save(saved, path)
    pool = Pool(trained_checkpoints[0].parents[2] / "data", ("train",), 24)
    items = exemplar_work(
        {1: path}, pool, np.arange(10), ["layer2"], top_k=2, batch_size=8, device=torch.device("cpu")
    )
    with pytest.raises(DegenerateError, match="exemplar activations of epoch 1, layer2: all values are zero"):
        items[0].compute()
