import torch

from protoviz_core.engine.rng import stream_keys
from protoviz_core.engine.robustness import Robustness


def _images(count: int = 3, size: int = 24) -> torch.Tensor:
    images = torch.full((count, 3, size, size), 0.2)
    images[:, :, 8:16, 10:14] = 0.9  # a bright bar in the middle
    return images


def test_each_image_is_moved_by_its_own_key_whatever_its_batch():
    robust = Robustness()
    keys = stream_keys(5, torch.arange(3))
    together = robust(_images(), keys, step=4)
    alone = robust(_images(1), keys[1:2], step=4)
    assert torch.allclose(together[1], alone[0], atol=1e-6)
    assert not torch.allclose(together[0], together[1])  # different keys, different moves
    assert not torch.allclose(robust(_images(1), keys[1:2], step=5), alone)  # and a new draw each step


def test_without_motion_or_noise_the_image_is_unchanged_and_with_them_the_bar_moves_but_stays():
    still = Robustness(shift=0.0, scale=(1.0, 1.0), rotate=0.0, noise=0.0)
    images = _images()
    keys = stream_keys(0, torch.arange(3))
    assert torch.allclose(still(images, keys, 1), images, atol=1e-5)
    moved = Robustness(noise=0.0)(images, keys, 1)
    assert not torch.allclose(moved, images, atol=1e-3)
    bright = (moved > 0.6).float().sum(dim=(1, 2, 3)) / 3
    assert ((bright > 0.6 * 32) & (bright < 1.5 * 32)).all()  # the 8 x 4 bar, moved, not lost
    assert torch.allclose(moved[:, :, 0, 0], torch.full((3, 3), 0.2), atol=0.31)  # border: grey fill or image


def test_gradients_reach_the_images():
    images = _images().requires_grad_(True)
    Robustness()(images, stream_keys(0, torch.arange(3)), 1).sum().backward()
    assert images.grad.abs().sum() > 0
