import pytest

import protoviz_core.data.dataset as dataset
import protoviz_core.data.stl10 as stl10
from protoviz_core.pipeline.config import DataParams, SyntheticParams
from protoviz_core.data.stl10 import DatasetError, read_split
from protoviz_core.data.synthetic import write_synthetic_stl10

SMALL = SyntheticParams(n_unlabeled=12, n_train=10, n_test=10, seed=0)


def test_synthetic_set_is_written_in_place(tmp_path):
    out = tmp_path / "stl10_binary"
    dataset.prepare_dataset(DataParams(name="synthetic", image_size=32, synthetic=SMALL), out)
    images, labels = read_split(out, "train", 32)
    assert images.shape == (10, 3, 32, 32) and sorted(labels) == list(range(10))
    assert not (tmp_path / "stl10_binary.partial").exists()


def test_failed_run_keeps_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "stl10_binary"
    dataset.prepare_dataset(DataParams(name="synthetic", image_size=32, synthetic=SMALL), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset, "write_synthetic_stl10", killed)
    with pytest.raises(KeyboardInterrupt):
        dataset.prepare_dataset(DataParams(name="synthetic", image_size=32, synthetic=SMALL), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not (tmp_path / "stl10_binary.partial").exists()


def test_stl10_offline_and_absent_gives_one_clear_error(tmp_path, monkeypatch):
    def offline(root):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(dataset, "_download_stl10", offline)
    params = DataParams(name="stl10", root=str(tmp_path / "nowhere"), image_size=96)
    with pytest.raises(DatasetError) as caught:
        dataset.prepare_dataset(params, tmp_path / "out")
    message = str(caught.value)
    assert str(tmp_path / "nowhere" / "stl10_binary") in message
    assert dataset.STL10_URL in message and "Network is unreachable" in message
    assert not (tmp_path / "out").exists()


@pytest.fixture
def small_real_layout(tmp_path, monkeypatch):
    """An 'STL10' download of reduced size, with the expected sizes reduced to match."""
    sizes = {"unlabeled": 4, "train": 10, "test": 10}
    monkeypatch.setattr(stl10, "STL10_SPLIT_SIZES", sizes)
    write_synthetic_stl10(
        tmp_path / "download" / "stl10_binary", image_size=96, n_unlabeled=4, n_train=10, n_test=10, seed=1
    )
    return tmp_path / "download"


def test_stl10_found_under_root_is_linked_into_the_output(tmp_path, small_real_layout):
    params = DataParams(name="stl10", root=str(small_real_layout), image_size=96)
    dataset.prepare_dataset(params, tmp_path / "out")
    ours, labels = read_split(tmp_path / "out", "test")
    theirs, their_labels = read_split(small_real_layout / "stl10_binary", "test")
    assert (ours == theirs).all() and (labels == their_labels).all()


def test_stl10_of_the_wrong_size_is_refused(tmp_path, small_real_layout):
    path = small_real_layout / "stl10_binary" / "train_y.bin"
    path.write_bytes(path.read_bytes()[:-1])
    params = DataParams(name="stl10", root=str(small_real_layout), image_size=96)
    with pytest.raises(DatasetError, match="train_y.bin: 9 bytes, expected 10"):
        dataset.prepare_dataset(params, tmp_path / "out")
