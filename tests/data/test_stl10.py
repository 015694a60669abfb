import numpy as np
import pytest
from torchvision.datasets import STL10

import protoviz_core.data.stl10 as stl10
from protoviz_core.data.stl10 import (
    STL10_CLASS_NAMES,
    STL10_URL,
    DatasetError,
    SplitWriter,
    class_names_path,
    images_path,
    labels_path,
    read_images,
    read_split,
)
from protoviz_core.data.synthetic import write_synthetic_stl10


class _TorchvisionSTL10(STL10):
    """torchvision's reader, minus the md5 check that only the real files pass."""

    def _check_integrity(self) -> bool:
        return True


@pytest.fixture(scope="module")
def stl10_root(tmp_path_factory):
    """A small synthetic set at STL10's 96 px under root/stl10_binary (torchvision's layout)."""
    root = tmp_path_factory.mktemp("stl10")
    write_synthetic_stl10(root / "stl10_binary", image_size=96, n_unlabeled=7, n_train=20, n_test=30, seed=3)
    return root


@pytest.mark.parametrize("split", ["train", "test", "unlabeled"])
def test_reader_matches_torchvision(stl10_root, split):
    ours_images, ours_labels = read_split(stl10_root / "stl10_binary", split)
    theirs = _TorchvisionSTL10(str(stl10_root), split=split)
    assert ours_images.shape == theirs.data.shape
    np.testing.assert_array_equal(ours_images, theirs.data)
    np.testing.assert_array_equal(ours_labels, theirs.labels)


def test_bytes_are_channel_major_column_major(tmp_path):
    image = np.arange(3 * 16 * 16, dtype=np.uint8).reshape(1, 3, 16, 16)
    with SplitWriter(tmp_path, "unlabeled") as writer:
        writer.write(image)
    stored = np.fromfile(images_path(tmp_path, "unlabeled"), dtype=np.uint8)
    # First bytes: channel 0, column 0 top to bottom.
    np.testing.assert_array_equal(stored[:16], image[0, 0, :, 0])
    np.testing.assert_array_equal(read_split(tmp_path, "unlabeled", 16)[0], image)


def test_labels_are_stored_1_to_10(stl10_root):
    raw = np.fromfile(labels_path(stl10_root / "stl10_binary", "train"), dtype=np.uint8)
    assert raw.min() == 1 and raw.max() == 10


def test_truncated_file_is_named(tmp_path, stl10_root):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    source = images_path(stl10_root / "stl10_binary", "test").read_bytes()
    images_path(folder, "test").write_bytes(source[:-100])
    with pytest.raises(DatasetError, match="test_X.bin.*not a whole number"):
        read_split(folder, "test")


def test_label_count_mismatch_is_named(tmp_path, stl10_root):
    folder = tmp_path / "stl10_binary"
    folder.mkdir()
    images_path(folder, "train").write_bytes(images_path(stl10_root / "stl10_binary", "train").read_bytes())
    labels_path(folder, "train").write_bytes(bytes([1, 2, 3]))
    with pytest.raises(DatasetError, match="3 labels for 20 images"):
        read_split(folder, "train")


def test_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(DatasetError, match="train_X.bin: missing.*dvc repro data"):
        read_split(tmp_path, "train")


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError):
        with SplitWriter(tmp_path, "train") as writer:
            writer.write(np.zeros((2, 3, 8, 8), np.uint8), np.array([0, 1]))
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def real_stl10(tmp_path, monkeypatch):
    """A folder that says it is the real STL10 (its class names), at 96 px, with the published
    split sizes scaled down to match it."""
    monkeypatch.setattr(stl10, "STL10_SPLIT_SIZES", {"unlabeled": 6, "train": 10, "test": 10})
    write_synthetic_stl10(tmp_path, image_size=96, n_unlabeled=6, n_train=10, n_test=10, seed=2)
    class_names_path(tmp_path).write_text("\n".join(STL10_CLASS_NAMES) + "\n")
    return tmp_path


def test_a_real_stl10_file_cut_to_whole_images_is_refused_by_every_read(real_stl10):
    assert len(read_images(real_stl10, "unlabeled")) == 6
    path = images_path(real_stl10, "unlabeled")
    path.write_bytes(path.read_bytes()[: 3 * 3 * 96 * 96])  # half the images: still a whole number
    for read in (lambda: read_images(real_stl10, "unlabeled"), lambda: read_split(real_stl10, "test")):
        with pytest.raises(DatasetError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith(f"{path}: 82944 bytes, expected 165888 (STL10's unlabeled split holds 6 ")
        assert STL10_URL in message and "dvc repro data" in message


def test_a_synthetic_folder_is_held_only_to_whole_images(real_stl10):
    """The same cut in the synthetic set (its own class names) reads as the smaller set it is."""
    class_names_path(real_stl10).write_text("disc\nring\n")
    path = images_path(real_stl10, "unlabeled")
    path.write_bytes(path.read_bytes()[: 3 * 3 * 96 * 96])
    assert len(read_images(real_stl10, "unlabeled")) == 3
