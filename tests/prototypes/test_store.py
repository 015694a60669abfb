import pandas as pd
import pytest
import torch

from protoviz_core import open_prototypes
from protoviz_core.engine.synthesis import Prototypes
from protoviz_core.prototypes.store import (
    INDEX_COLUMNS,
    ShardId,
    StoreError,
    build_index,
    convert_shards,
    read_shard,
    shard_path,
    write_shard,
)


def _prototypes(channels, size=6, value=0.0):
    n = len(channels)
    images = torch.linspace(0, 1, n * 3 * size * size).view(n, 3, size, size).roll(int(value * 7), dims=0)
    return Prototypes(
        images=images,
        activations=torch.arange(n, dtype=torch.float32) + value,
        latents=torch.randn(n, 5),
        channels=torch.tensor(channels),
        dead=torch.tensor([False] * (n - 1) + [True]),
        redrawn=torch.zeros(n, dtype=torch.bool),
        evolution_activations=torch.zeros(n),
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
    # The store's declared keys, in their order: these 13, each one checked below.
    assert list(index.columns) == INDEX_COLUMNS and len(INDEX_COLUMNS) == 13
    assert len(index) == 2 * 2 * 2 * 3
    row = index[(index.epoch == 1) & (index.layer == "layer2") & (index.repeat == 2) & (index.channel == 5)]
    assert row.shard.item() == "e0001-layer2-r2.pt" and row.offset.item() == 2 and row.dead.item()
    assert set(index.shard_key) == {"k"} and set(index.aug) == {"clrjit"} and set(index.seed) == {1}
    assert row.activation.item() == pytest.approx(2 + 1.2)  # its prototype's (offset 2, value 1 + 2 / 10)
    assert index.natural_best.isna().all() and index.superstimulus.isna().all()  # built without exemplars


def test_index_holds_each_prototypes_ratio_to_its_units_best_natural_image(store):
    shards = [ShardId(e, layer, r) for e in (0, 1) for layer in ("layer1", "layer2") for r in (1, 2)]
    best = {"layer1": {0: 2.0, 3: 0.0, 5: 4.0}, "layer2": {0: 1.0, 3: 0.5, 5: 8.0}}
    index = build_index(
        store,
        shards,
        aug="clrjit",
        seed=1,
        natural_best=lambda epoch, layer, channels: [best[layer][int(c)] * (epoch + 1) for c in channels],
    )
    row = index[(index.epoch == 1) & (index.layer == "layer2") & (index.repeat == 2) & (index.channel == 3)]
    assert row.natural_best.item() == 1.0 and row.superstimulus.item() == pytest.approx((1 + 1.2) / 1.0)
    silent = index[(index.layer == "layer1") & (index.channel == 3)]
    assert silent.superstimulus.isna().all()  # no image drives the unit: no ratio
    assert pd.read_parquet(store / "index.parquet").superstimulus.equals(index.superstimulus)


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
    with pytest.raises(
        FileNotFoundError,
        match="absent/index.parquet: no prototype index; run dvc repro --force --single-item extract",
    ):
        open_prototypes(tmp_path / "absent")


def test_truncated_shard_is_named_by_every_reader(store):
    path = shard_path(store, ShardId(0, "layer1", 1))
    path.write_bytes(path.read_bytes()[:200])
    assert read_shard(path) is None
    prototypes = open_prototypes(store)
    rows = prototypes.select(epoch=0, layer="layer1", repeat=1)
    for read in (lambda: prototypes.images(rows), lambda: prototypes.shard_keys(epoch=0)):
        with pytest.raises(
            StoreError, match=r"e0000-layer1-r1.pt: missing or truncated shard; run dvc repro"
        ):
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
    # Others still read
    assert prototypes.images(prototypes.select(epoch=0, layer="layer2", repeat=1)).shape[0] == 3


def _smooth_prototypes(channels, size=32):
    """Smooth images (a gradient per channel): what lossless PNG compresses well."""
    ramp = torch.linspace(0, 1, size)
    images = torch.stack(
        [
            torch.stack(
                [
                    ramp[None, :].expand(size, size) * (c + 1) / 10,
                    ramp[:, None].expand(size, size),
                    torch.full((size, size), 0.5),
                ]
            )
            for c in channels
        ]
    )
    prototype = _prototypes(channels, size=size)
    return Prototypes(**{**prototype.__dict__, "images": images})


def test_png_shards_read_back_the_same_pixels_and_are_smaller_for_smooth_images(tmp_path):
    shard = ShardId(0, "layer1", 1)
    for image_format in ("raw", "png"):
        write_shard(
            tmp_path / image_format, shard, "k", _smooth_prototypes([0, 3, 5, 8]), image_format=image_format
        )
        build_index(tmp_path / image_format, [shard], aug="clrjit", seed=1)
    raw, png = open_prototypes(tmp_path / "raw"), open_prototypes(tmp_path / "png")
    for channels in ([0, 3, 5, 8], [8, 3], [5]):  # all, a reordered subset, one
        rows = raw.select(channel=channels).set_index("channel").loc[channels].reset_index()
        rows_png = png.select(channel=channels).set_index("channel").loc[channels].reset_index()
        assert torch.equal(png.images(rows_png), raw.images(rows))
    assert read_shard(shard_path(tmp_path / "png", shard)).keys() >= {"png", "png_offsets"}
    assert "images" not in read_shard(shard_path(tmp_path / "png", shard))
    assert (
        shard_path(tmp_path / "png", shard).stat().st_size
        < 0.5 * shard_path(tmp_path / "raw", shard).stat().st_size
    )


def test_convert_shards_reencodes_only_other_formats_and_keeps_pixels_and_key(tmp_path):
    shards = [ShardId(0, "layer1", 1), ShardId(1, "layer1", 1)]
    write_shard(tmp_path, shards[0], "k0", _smooth_prototypes([1, 2]))
    write_shard(tmp_path, shards[1], "k1", _smooth_prototypes([1, 2]), image_format="png")
    build_index(tmp_path, shards, aug="clrjit", seed=1)
    pixels = open_prototypes(tmp_path).images(open_prototypes(tmp_path).index)
    stamp = shard_path(tmp_path, shards[1]).stat().st_mtime_ns
    lines = []
    assert convert_shards(tmp_path, shards, "png", log=lines.append) == 1  # only the raw one
    assert (
        shard_path(tmp_path, shards[1]).stat().st_mtime_ns == stamp
        and "re-encoded 1 shards as png" in lines[0]
    )
    converted = read_shard(shard_path(tmp_path, shards[0]))
    assert (
        converted["key"] == "k0"
        and "png" in converted
        and torch.equal(converted["channels"], torch.tensor([1, 2]))
    )
    store = open_prototypes(tmp_path)  # the old index still vouches for the converted shards
    assert torch.equal(store.images(store.index), pixels)
    assert convert_shards(tmp_path, shards, "raw", log=lines.append) == 2
    assert torch.equal(open_prototypes(tmp_path).images(store.index), pixels)
    assert convert_shards(tmp_path, shards, "raw", log=lines.append) == 0


def test_a_png_shard_without_its_offsets_is_not_a_shard(tmp_path):
    shard = ShardId(0, "layer1", 1)
    path = write_shard(tmp_path, shard, "k", _smooth_prototypes([1]), image_format="png")
    contents = dict(torch.load(path, weights_only=True))
    del contents["png_offsets"]
    torch.save(contents, path)
    assert read_shard(path) is None
