import pytest
import torch

from protoviz_core.infra.work import WorkItem, run_work
from protoviz_core.measures.masks import MaskError, MaskSet, load_masks, mask_digest


def _set():
    return MaskSet({0: {"layer1": torch.zeros(4, 4)}, 4: {"layer1": torch.ones(4, 4)}})


def test_an_epoch_uses_its_own_or_the_nearest_earlier_masks():
    masks = _set()
    assert [masks.source_epoch(e) for e in (0, 3, 4, 9)] == [0, 0, 4, 4]
    assert masks.for_epoch(5, ["layer1"])["layer1"].sum() == 16


def test_missing_layers_and_no_masks_are_clear_errors():
    with pytest.raises(MaskError, match=r"\['layer3'\].*rfmask.layers"):
        _set().for_epoch(0, ["layer1", "layer3"])
    with pytest.raises(MaskError, match="run the rfmask stage"):
        MaskSet({}).for_epoch(0, ["layer1"])


def test_load_reads_the_rfmask_stages_files_and_names_a_broken_one(tmp_path):
    fields = {"layer1": {"mask": torch.full((4, 4), 0.5), "sigma": [1.0, 1.0]}}
    run_work([WorkItem("epoch_0002.pt", "key2", lambda: fields)], tmp_path)
    masks = load_masks(tmp_path)
    assert list(masks.masks) == [2] and masks.for_epoch(7, ["layer1"])["layer1"].mean() == 0.5
    (tmp_path / "epoch_0003.pt").write_bytes(b"garbage")
    with pytest.raises(MaskError, match="epoch_0003.pt"):
        load_masks(tmp_path)


def test_the_digest_follows_the_values_not_the_object():
    a = {"layer1": torch.ones(4, 4), "layer2": torch.zeros(4, 4)}
    assert mask_digest(a) == mask_digest({"layer2": torch.zeros(4, 4), "layer1": torch.ones(4, 4)})
    assert mask_digest(a) != mask_digest({**a, "layer1": torch.full((4, 4), 0.5)})
