import pandas as pd
import pytest
import torch

from protoviz_core import open_prototypes
from protoviz_core.store import ShardId, StoreError, build_index, read_shard, shard_path, write_shard
from protoviz_core.synthesis import Prototypes


def _prototypes(channels, size=6, value=0.0):
    n = len(channels)
    images = torch.linspace(0, 1, n * 3 * size * size).view(n, 3, size, size).roll(int(value * 7), dims=0)
    return Prototypes(
        images=images, activations=torch.arange(n, dtype=torch.float32) + value,
        latents=torch.randn(n, 5), channels=torch.tensor(channels), dead=torch.tensor([False] * (n - 1) + [True]),
        redrawn=torch.zeros(n, dtype=torch.bool), evolution_activations=torch.zeros(n),
    )


@pytest.fixture
def store(tmp_path):
    shards = []
    for epoch in (0, 1):
        for layer in ("layer1", "layer2"):
            for repeat in (1, 2):
                shard = ShardId(epoch, layer, repeat)
                write_shard(tmp_path, shard, "k", _prototypes([0, 3, 5], value=epoch + repeat / 10))
                shards.append(shard)
    build_index(tmp_path, shards, aug="clrjit", seed=1)
    return tmp_path


def test_index_has_one_row_per_prototype_with_all_keys(store):
    index = pd.read_parquet(store / "index.parquet")
    assert list(index.columns) == ["aug", "seed", "repeat", "epoch", "layer", "channel", "activation", "dead",
                                   "shard", "offset", "shard_key"]
    assert len(index) == 2 * 2 * 2 * 3
    row = index[(index.epoch == 1) & (index.layer == "layer2") & (index.repeat == 2) & (index.channel == 5)]
    assert row.shard.item() == "e0001-layer2-r2.pt" and row.offset.item() == 2 and row.dead.item()
    assert set(index.shard_key) == {"k"}


def test_open_prototypes_returns_what_was_written(store):
    prototypes = open_prototypes(store)
    rows = prototypes.select(epoch=1, layer="layer1", repeat=[1, 2], channel=3)
    assert len(rows) == 2
    images = prototypes.images(rows)
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 6, 6)
    for i, (_, row) in enumerate(rows.iterrows()):
        written = _prototypes([0, 3, 5], value=row["epoch"] + row["repeat"] / 10)
        expected = (written.images[row["offset"]] * 255).round().to(torch.uint8)
        assert torch.equal(images[i], expected)
    assert prototypes.latents(rows).dtype == torch.float16


def test_selection_order_is_kept_across_shards(store):
    prototypes = open_prototypes(store)
    rows = prototypes.select(channel=0).sample(frac=1, random_state=0)  # shuffled across shards
    one_by_one = torch.cat([prototypes.images(rows.loc[[i]]) for i in rows.index])
    assert torch.equal(prototypes.images(rows), one_by_one)


def test_bad_selection_and_missing_store(store, tmp_path):
    with pytest.raises(ValueError, match="unknown keys"):
        open_prototypes(store).select(colour="red")
    with pytest.raises(FileNotFoundError, match="absent/index.parquet: no prototype index; run dvc repro"):
        open_prototypes(tmp_path / "absent")


def test_truncated_shard_is_named_by_every_reader(store):
    path = shard_path(store, ShardId(0, "layer1", 1))
    path.write_bytes(path.read_bytes()[:200])
    assert read_shard(path) is None
    prototypes = open_prototypes(store)
    rows = prototypes.select(epoch=0, layer="layer1", repeat=1)
    for read in (lambda: prototypes.images(rows), lambda: prototypes.shard_keys(epoch=0)):
        with pytest.raises(StoreError, match=r"e0000-layer1-r1.pt: missing or truncated shard; run dvc repro"):
            read()


def test_truncated_index_is_one_error_naming_it(store):
    index = store / "index.parquet"
    index.write_bytes(index.read_bytes()[:100])
    with pytest.raises(StoreError, match=r"index.parquet: unreadable prototype index \(\w+\); run dvc repro"):
        open_prototypes(store)


def test_a_shard_rewritten_by_an_unfinished_extract_is_refused(store):
    """An extract of another configuration killed part-way: the index still describes the old shards."""
    shard = ShardId(1, "layer2", 1)
    prototypes = open_prototypes(store)
    rows = prototypes.select(epoch=1, layer="layer2", repeat=1)
    write_shard(store, shard, "another configuration", _prototypes([0, 3, 5]))
    with pytest.raises(StoreError, match="e0001-layer2-r1.pt: made by another configuration than"):
        prototypes.images(rows)
    with pytest.raises(StoreError, match="made by another configuration"):
        prototypes.shard_keys(layer="layer2")
    write_shard(store, shard, "k", _prototypes([0, 1, 2, 3, 4, 5]))  # same key, other channel selection
    with pytest.raises(StoreError, match="e0001-layer2-r1.pt: holds other channels than"):
        prototypes.images(rows)
    assert prototypes.images(prototypes.select(epoch=0, layer="layer2", repeat=1)).shape[0] == 3  # others still read
