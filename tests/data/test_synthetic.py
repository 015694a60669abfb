import colorsys

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.linear_model import LogisticRegression

from protoviz_core.data.stl10 import read_split
from protoviz_core.data.synthetic import CLASS_NAMES, generate_images, write_synthetic_stl10


def _write(root, seed):
    write_synthetic_stl10(root, image_size=32, n_unlabeled=50, n_train=100, n_test=40, seed=seed)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    _write(tmp_path / "a", seed=5)
    _write(tmp_path / "b", seed=5)
    _write(tmp_path / "c", seed=6)
    for name in ("unlabeled_X.bin", "train_X.bin", "train_y.bin", "test_X.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "train_X.bin").read_bytes() != (tmp_path / "c" / "train_X.bin").read_bytes()


def test_splits_have_requested_sizes_and_balanced_classes(tmp_path):
    _write(tmp_path, seed=0)
    assert (tmp_path / "class_names.txt").read_text().split() == list(CLASS_NAMES)
    for split, count in {"unlabeled": 50, "train": 100, "test": 40}.items():
        images, labels = read_split(tmp_path, split, 32)
        assert images.shape == (count, 3, 32, 32)
        if split != "unlabeled":
            assert np.bincount(labels, minlength=10).tolist() == [count // 10] * 10


def test_colour_is_a_nuisance_and_shape_is_the_class():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(10), 60)
    images = generate_images(labels, 32, rng).astype(np.float32) / 255  # (600, 3, 32, 32)
    train, test = np.arange(600) % 2 == 0, np.arange(600) % 2 == 1

    def accuracy(features):
        model = LogisticRegression(max_iter=2000).fit(features[train], labels[train])
        return model.score(features[test], labels[test])

    colour = np.concatenate([images.mean(axis=(2, 3)), images.std(axis=(2, 3))], axis=1)  # (600, 6)
    # Shape: the grey image, with each image's own contrast polarity and range removed.
    grey = images.mean(axis=1)
    grey = (grey - grey.mean(axis=(1, 2), keepdims=True)) / (grey.std(axis=(1, 2), keepdims=True) + 1e-6)
    spectrum = np.abs(np.fft.fft2(grey)).reshape(600, -1)  # position- and polarity-free
    assert accuracy(colour) < 0.3  # chance is 0.1
    assert accuracy(spectrum) > 0.8


def _foreground(images: np.ndarray) -> np.ndarray:
    """(n, S, S) bool: the light element pixels (value above 0.55; backgrounds stay below 0.45)."""
    return images.max(axis=1) > 0.55


def test_a_crop_of_eight_percent_of_the_image_still_holds_an_element():
    # SimCLR's random resized crops go down to 8% of the image (14 x 14 px at 48 px):
    # the class must survive them, so almost every such window shows part of an element.
    labels = np.repeat(np.arange(10), 20)
    images = generate_images(labels, 48, np.random.default_rng(2)).astype(np.float32) / 255
    windows = sliding_window_view(_foreground(images), (14, 14), axis=(1, 2))  # (200, 35, 35, 14, 14)
    holds_an_element = windows.any(axis=(-1, -2))
    assert holds_an_element.mean() > 0.9
    assert holds_an_element.reshape(len(labels), -1).mean(axis=1).min() > 0.5  # no image is mostly empty


def test_palette_hues_span_only_what_colour_jitter_shifts():
    # Colour jitter shifts hue by up to +-0.2 of the wheel; the palettes' foreground hues
    # span that range (0 to 0.4), so under jitter an image's colour no longer identifies it.
    labels = np.repeat(np.arange(10), 20)
    images = generate_images(labels, 48, np.random.default_rng(3)).astype(np.float32) / 255
    foreground = _foreground(images)
    hues = np.array(
        [colorsys.rgb_to_hsv(*image[:, mask].mean(axis=1))[0] for image, mask in zip(images, foreground)]
    )
    from_middle = (hues - 0.2 + 0.5) % 1.0 - 0.5  # signed, on the hue circle
    assert np.abs(from_middle).max() < 0.21
    assert np.ptp(from_middle) > 0.3  # and they do vary: colour is a per-image nuisance
