"""The ``decoder`` image prior: a small VAE trained on the run's own training images.

The paper searches the latent space of DeePSiM, a generator trained on ImageNet, so that
prototypes look like natural images (Sec. 2.1). Offline there is no such generator; here
the "natural images" are the run's own data, and the prior is the decoder of a
variational autoencoder (Kingma and Welling, ICLR 2014) trained on them once by the decoder
stage: a pure function of the data set, the params and the seed, cached as a DVC output.
The search (CMA-ES, then Adam) then moves in its latent space, where every point decodes
to an image of the data's kind (its colours, its elements on their grounds), instead of
in pixel or phase space, where the optimum can be a texture no data image resembles.

The encoder mirrors :class:`~protoviz_core.engine.generators.DecoderGenerator`; it is used
in training only and not kept. The loss is the per-image binary cross-entropy of the
reconstruction plus ``beta`` times the KL divergence of the posterior from the standard
normal. ``beta`` below 1 trades the latent's fit to the normal for sharper images
(Higgins et al., ICLR 2017 use the other direction); the search starts from normal draws,
so the latent must stay close to it, which the bench checks by sampling it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from protoviz_core.data.stl10 import read_images
from protoviz_core.engine.generators import DecoderGenerator
from protoviz_core.infra.atomic import save_atomic
from protoviz_core.infra.checks import DegenerateError, require_informative


class Encoder(nn.Module):
    """images (N, 3, S, S) in [0, 1] -> posterior mean and log-variance, each (N, d)."""

    def __init__(self, latent_dim: int, width: int, image_size: int):
        super().__init__()

        def down(cin: int, cout: int) -> nn.Module:
            return nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=4, stride=2, padding=1),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2),
            )

        self.body = nn.Sequential(
            down(3, width), down(width, 2 * width), down(2 * width, 4 * width), down(4 * width, 8 * width)
        )
        self.side = 16 * math.ceil(image_size / 16)  # the decoder's own side: images are resized to it
        flat = 8 * width * (self.side // 16) ** 2
        self.mean, self.log_variance = nn.Linear(flat, latent_dim), nn.Linear(flat, latent_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if images.shape[-1] != self.side:
            images = F.interpolate(images, size=(self.side,) * 2, mode="bilinear", antialias=True)
        hidden = self.body(images).flatten(start_dim=1)
        return self.mean(hidden), self.log_variance(hidden)


def train_decoder(
    images: np.ndarray | torch.Tensor,
    *,
    latent_dim: int,
    width: int,
    epochs: int,
    beta: float,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, float], None] = lambda epoch, loss: None,
) -> DecoderGenerator:
    """Train a VAE on ``images`` (N, 3, S, S) uint8, an array or a memory map (each batch is
    copied in turn); its decoder in eval mode, on the CPU.

    Deterministic for one seed on one machine (torch's CPU kernels; like training, not
    across CPU models). ``on_epoch(epoch, mean loss per image)`` after each epoch.

    Raises:
        DegenerateError: the decoder's images are not finite, or differ across latents by less
            than a grey level on average (it learnt nothing a search could use).
    """
    size = int(images.shape[-1])  # images stay where they are (a memory map): batches are copied
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the layers' initial weights
    encoder = Encoder(latent_dim, width, size).to(device)
    decoder = DecoderGenerator(latent_dim, width, size).to(device)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)
    encoder.train()
    decoder.train()
    count = len(images)
    for epoch in range(epochs):
        order = torch.randperm(count, generator=generator)
        total, seen = 0.0, 0
        for start in range(0, count, batch_size):
            chosen = order[start : start + batch_size].numpy()
            if len(chosen) < 2:  # BatchNorm needs two images; a last batch of one is left out
                continue
            batch = torch.from_numpy(np.ascontiguousarray(images[chosen])).to(device).float() / 255
            mean, log_variance = encoder(batch)
            noise = torch.randn(mean.shape, generator=generator).to(device)
            decoded = decoder(mean + noise * (0.5 * log_variance).exp())
            reconstruction = F.binary_cross_entropy(decoded, batch, reduction="sum") / len(batch)
            divergence = -0.5 * (1 + log_variance - mean.square() - log_variance.exp()).sum() / len(batch)
            loss = reconstruction + beta * divergence
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
            seen += len(batch)
        on_epoch(epoch, total / seen)
    decoder = decoder.cpu().eval()
    with torch.no_grad():
        samples = decoder(torch.randn(16, latent_dim, generator=torch.Generator().manual_seed(seed)))
    what = "the decoder prior's samples of 16 normal latents"
    require_informative(samples, what)
    spread = float(samples.std(dim=0).mean())
    if spread < 1 / 255:  # the latent moves no pixel by a grey level: a search in it could not move
        raise DegenerateError(
            f"{what} differ by {spread * 255:.2f} grey levels on average: it learnt nothing of the "
            "images; check the training split, or train longer (decoder.epochs)"
        )
    return decoder


def train_on_split(root: str | Path, split: str, image_size: int, settings, **kwargs) -> DecoderGenerator:
    """:func:`train_decoder` on every image of ``split`` with the ``decoder`` params section."""
    return train_decoder(
        read_images(root, split, image_size),
        latent_dim=settings.latent_dim,
        width=settings.width,
        epochs=settings.epochs,
        beta=settings.beta,
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=settings.seed,
        **kwargs,
    )


def save_decoder(path: str | Path, decoder: DecoderGenerator) -> None:
    """Write the decoder atomically, in the format
    :meth:`~protoviz_core.engine.generators.DecoderGenerator.from_file` reads."""
    save_atomic(decoder.file_contents(), path)
