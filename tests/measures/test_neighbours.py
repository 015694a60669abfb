import pandas as pd
import pytest
import torch

from protoviz_core.infra.atomic import save_atomic
from protoviz_core.measures.neighbours import UnitIndex, prototype_index, response_index


def _labels(count: int) -> pd.DataFrame:
    return pd.DataFrame({"run": "r", "epoch": 0, "layer": "layer1", "channel": range(count)})


def test_nearest_units_are_the_top_k_by_cosine():
    vectors = torch.randn(50, 16, generator=torch.Generator().manual_seed(0))
    index = UnitIndex(vectors, _labels(50))
    found = index.nearest(3, k=5)
    unit = torch.nn.functional.normalize(vectors, dim=1)
    cosine = unit @ unit[3]
    cosine[3] = -2  # itself is left out
    expected = cosine.topk(5)
    assert found.channel.tolist() == expected.indices.tolist()
    assert found.similarity.tolist() == pytest.approx(expected.values.tolist(), abs=2e-3)  # float16 storage
    assert len(UnitIndex.concat([index, index])) == 100
    with pytest.raises(KeyError, match="0 units match"):
        index.find(channel=99)


def test_units_that_respond_alike_are_nearest_whatever_their_scale(tmp_path):
    """Channel 2 is channel 0 times 3 plus 5 on the same images: correlation 1, so nearest."""
    generator = torch.Generator().manual_seed(1)
    units = torch.randn(30, 4, generator=generator)
    units[:, 2] = 3 * units[:, 0] + 5
    for epoch in (0, 1):
        contents = {"key": "k", "layers": {"layer1": {"units": units}}, "positions": torch.arange(30)}
        save_atomic(contents, tmp_path / f"e{epoch:04d}.pt")
    index = response_index(tmp_path, run="demo")
    assert len(index) == 2 * 4
    nearest = index.nearest(index.find(epoch=1, channel=0), k=3)
    # itself at epoch 0, and channel 2 at both epochs: all correlation 1
    assert set(zip(nearest.epoch, nearest.channel)) == {(0, 0), (0, 2), (1, 2)}
    assert nearest.similarity.min() > 0.99 and set(nearest.run) == {"demo"}


def test_units_whose_prototypes_look_alike_are_nearest(tmp_path):
    generator = torch.Generator().manual_seed(2)
    masked = torch.randn(2, 3, 12, generator=generator)  # (repeats, channels, D)
    masked[:, 2] = masked[:, 0] * 2  # channel 2's prototypes: channel 0's, brighter
    folder = tmp_path / "pixel"
    folder.mkdir()
    layer = {"channels": torch.tensor([4, 9, 13]), "repeats": torch.tensor([1, 2]), "masked": masked.half()}
    save_atomic({"key": "k", "layer2": {**layer, "plain": masked.half()}}, folder / "e0003.pt")
    index = prototype_index(tmp_path, "pixel")
    nearest = index.nearest(index.find(channel=4), k=1)
    assert nearest.channel.tolist() == [13] and nearest.epoch.tolist() == [3]
    assert nearest.similarity.item() == pytest.approx(1.0, abs=1e-3)


def test_many_queries_at_once_find_what_one_query_at_a_time_finds():
    """Chunks smaller than the index: a query's own row and its best units fall in other chunks."""
    vectors = torch.randn(70, 8, generator=torch.Generator().manual_seed(2))
    index = UnitIndex(vectors, _labels(70))
    rows = [0, 13, 69]
    many = index.nearest_each(rows, k=4, chunk=16)
    for row in rows:
        one = index.nearest(row, k=4)
        found = many[many["query"] == row]
        assert found.channel.tolist() == one.channel.tolist()
        assert found.similarity.tolist() == pytest.approx(one.similarity.tolist(), abs=1e-6)
        assert row not in found.channel.tolist()
    assert index.nearest_each([], k=4).empty
