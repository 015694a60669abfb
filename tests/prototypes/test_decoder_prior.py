"""The decoder prior's training: it learns the images, deterministically, and refuses to learn nothing."""

import numpy as np
import pytest
import torch

from protoviz_core.infra.checks import DegenerateError
from protoviz_core.prototypes.decoder_prior import train_decoder


def _squares(count: int, size: int = 16, seed: int = 0) -> np.ndarray:
    """uint8 (count, 3, size, size): one bright square of a random colour on a dark ground each."""
    generator = np.random.default_rng(seed)
    images = np.full((count, 3, size, size), 20, dtype=np.uint8)
    for image in images:
        y, x = generator.integers(0, size - 6, 2)
        image[:, y : y + 6, x : x + 6] = generator.integers(120, 256, 3)[:, None, None]
    return images


SETTINGS = dict(latent_dim=4, width=4, beta=0.1, batch_size=16, lr=0.01)


def test_training_lowers_the_loss_and_is_the_same_for_the_same_seed():
    losses = []
    decoder = train_decoder(
        _squares(64), epochs=6, seed=0, on_epoch=lambda e, loss: losses.append(loss), **SETTINGS
    )
    assert len(losses) == 6 and losses[-1] < 0.9 * losses[0]
    again = train_decoder(_squares(64), epochs=6, seed=0, **SETTINGS)
    other = train_decoder(_squares(64), epochs=6, seed=1, **SETTINGS)
    latents = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(decoder(latents), again(latents))
        assert not torch.equal(decoder(latents), other(latents))
    assert not decoder.training and decoder.image_size == 16


def test_a_data_set_of_one_flat_image_teaches_nothing_and_is_refused():
    """The control: every image the same flat grey; the decoder's samples are then all alike."""
    flat = np.full((32, 3, 16, 16), 128, dtype=np.uint8)
    with pytest.raises(DegenerateError, match="decoder prior's samples"):
        train_decoder(flat, epochs=30, seed=0, **{**SETTINGS, "lr": 0.05})
