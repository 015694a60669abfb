"""Gradient receptive fields of units and the Gaussian masks fitted to them.

Paper Sec. 6.3: for the centre unit f of a channel, average the input gradient
over uniform-noise images, M_raw = E_x[grad_x f(x)] with x ~ U[0, 1]^(H x W x 3)
(200 samples), take the sum of squares over the colour channels as an H x W map,
and fit a 2-D Gaussian to it (scipy.optimize.curve_fit). The fitted Gaussian, with
peak 1, is the unit's receptive-field mask, used to highlight the centre of its
prototype.

A fit that fails or degenerates never stops a long run: the Gaussian is then
estimated from the map's moments and ``fit_ok`` is False.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import OptimizeWarning, curve_fit
from torch import nn

from protoviz_core.engine.normalization import Normalizer
from protoviz_core.engine.units import (
    centre_activation,
    channel_count,
    check_channels,
    layer_reader,
    spaced_channels,
)
from protoviz_core.infra.checks import require_informative
from protoviz_core.infra.work import WorkItem, identity
from protoviz_core.models.backbones import NORMALIZE
from protoviz_core.pipeline.config import RFMaskParams
from protoviz_core.training.checkpoints import checkpoint_identity, load_backbone


@dataclass
class GaussianFit:
    center: tuple[float, float]  # (y, x) in pixels
    sigma: tuple[float, float]  # (sy, sx) in pixels
    fit_ok: bool  # False: curve_fit failed or degenerated; moments were used


@dataclass
class ReceptiveField:
    map: torch.Tensor  # (H, W), or (N, H, W) per channel: squared mean gradient summed over colour
    center: tuple[float, float]  # fitted (y, x) of the (mean) map
    sigma: tuple[float, float]  # fitted (sy, sx)
    mask: torch.Tensor  # (H, W) in [0, 1]: the fitted Gaussian, peak 1
    fit_ok: bool


def gradient_maps(
    model: nn.Module,
    layer: str,
    channels: torch.Tensor,
    *,
    image_size: int,
    samples: int,
    seed: int,
    device: torch.device,
    normalize: dict,
    max_batch: int,
    read_unit: str = "top_left",
) -> torch.Tensor:
    """Per-channel maps (N, S, S): sum over colour of the squared mean input gradient.

    The same ``samples`` noise images serve every channel. Each image in a forward
    batch drives only its own channel's centre unit, so one backward pass gives the
    gradients of many (channel, sample) pairs at once.
    """
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(samples, 3, image_size, image_size, generator=generator).to(device)  # U[0, 1]
    normalise = Normalizer(normalize, device)
    pairs_channel = channels.to(device).repeat_interleave(samples)  # (N*samples,)
    pairs_sample = torch.arange(samples, device=device).repeat(len(channels))
    gradient_sum = torch.zeros(len(channels), 3, image_size, image_size, device=device)
    with layer_reader(model, layer) as read:
        for start in range(0, len(pairs_channel), max_batch):
            stop = start + max_batch
            images = noise[pairs_sample[start:stop]].clone().requires_grad_(True)
            activation = centre_activation(read(normalise(images)), pairs_channel[start:stop], read_unit)
            (gradient,) = torch.autograd.grad(activation.sum(), images)
            owner = torch.arange(start, min(stop, len(pairs_channel)), device=device) // samples
            gradient_sum.index_add_(0, owner, gradient)
    mean_gradient = gradient_sum / samples  # (N, 3, S, S)
    return mean_gradient.pow(2).sum(dim=1).cpu()  # (N, S, S)


def _gaussian(
    coords: tuple[np.ndarray, np.ndarray], amplitude: float, y0: float, x0: float, sy: float, sx: float
) -> np.ndarray:
    y, x = coords
    return amplitude * np.exp(-((y - y0) ** 2 / (2 * sy**2) + (x - x0) ** 2 / (2 * sx**2)))


def _moments(field: np.ndarray) -> GaussianFit:
    """Centre and spread of a non-negative map from its first and second moments."""
    h, w = field.shape
    total = field.sum()
    if not np.isfinite(total) or total <= 0:
        return GaussianFit(((h - 1) / 2, (w - 1) / 2), (h / 2, w / 2), False)
    y, x = np.mgrid[0:h, 0:w]
    cy, cx = (field * y).sum() / total, (field * x).sum() / total
    sy = np.sqrt(max((field * (y - cy) ** 2).sum() / total, 0.25))
    sx = np.sqrt(max((field * (x - cx) ** 2).sum() / total, 0.25))
    return GaussianFit((float(cy), float(cx)), (float(sy), float(sx)), False)


def fit_gaussian(field: np.ndarray) -> GaussianFit:
    """Fit ``A exp(-(dy^2/2sy^2 + dx^2/2sx^2))`` to an (H, W) map, centre bounded to the image.

    Falls back to :func:`_moments` (``fit_ok=False``) when curve_fit fails or its
    result is degenerate.
    """
    field = np.asarray(field, dtype=np.float64)
    h, w = field.shape
    start = _moments(field)
    if field.max() <= 0 or not np.isfinite(field).all():
        return start
    scale = field.max()
    y, x = np.mgrid[0:h, 0:w]
    p0 = [1.0, *start.center, *(min(s, 4 * n) for s, n in zip(start.sigma, (h, w)))]
    bounds = ([0, 0, 0, 0.3, 0.3], [np.inf, h - 1, w - 1, 4 * h, 4 * w])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", OptimizeWarning)
            params, _ = curve_fit(
                _gaussian, (y.ravel(), x.ravel()), (field / scale).ravel(), p0=p0, bounds=bounds, maxfev=5000
            )
    except (RuntimeError, ValueError, OptimizeWarning):
        return start
    amplitude, cy, cx, sy, sx = params
    if not np.isfinite(params).all() or amplitude <= 0:
        return start
    return GaussianFit((float(cy), float(cx)), (float(sy), float(sx)), True)


def gaussian_mask(shape: tuple[int, int], fit: GaussianFit) -> torch.Tensor:
    """The fitted Gaussian with peak 1 as an (H, W) float mask in [0, 1]."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    values = _gaussian((y, x), 1.0, *fit.center, *fit.sigma)
    return torch.from_numpy(values.astype(np.float32))


def receptive_field(
    model: nn.Module,
    layer: str,
    *,
    image_size: int,
    samples: int = 200,
    channels: Sequence[int] | torch.Tensor | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    normalize: dict | None = None,
    max_batch: int = 256,
    read_unit: str = "top_left",
) -> ReceptiveField:
    """Gradient receptive field of the centre unit of ``layer`` and its Gaussian mask.

    Args:
        model: the network (eval mode is set; parameters are untouched).
        layer: dotted module name.
        image_size: side S of the noise images.
        samples: noise images averaged over (the paper uses 200).
        channels: ``None`` -> the mean map over all channels, (S, S); a list ->
            one map per channel, (N, S, S) (the fit is of their mean).
        normalize: the network's input normalisation (default ImageNet's).
        max_batch: most (channel, sample) images per forward/backward pass.
        read_unit: ``top_left`` or ``centred`` (:func:`~protoviz_core.engine.units.centre_window`).

    Returns:
        :class:`ReceptiveField`.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    try:
        chosen = check_channels(channels, channel_count(model, layer, image_size), layer)
        maps = gradient_maps(
            model,
            layer,
            chosen,
            image_size=image_size,
            samples=samples,
            seed=seed,
            device=device,
            normalize=normalize or NORMALIZE,
            max_batch=max_batch,
            read_unit=read_unit,
        )
    finally:
        model.train(was_training)
    mean_map = maps.mean(dim=0)  # (S, S)
    fit = fit_gaussian(mean_map.numpy())
    return ReceptiveField(
        map=mean_map if channels is None else maps,
        center=fit.center,
        sigma=fit.sigma,
        mask=gaussian_mask(mean_map.shape, fit),
        fit_ok=fit.fit_ok,
    )


def layer_fields(
    model: nn.Module,
    layers: list[str],
    *,
    image_size: int,
    samples: int,
    channels_per_layer: int | None,
    seed: int,
    device: torch.device,
    normalize: dict,
    max_batch: int,
    read_unit: str = "top_left",
) -> dict[str, dict]:
    """Receptive field of each layer (mean over its channels), as plain tensors and numbers.

    Returns:
        {layer: {"map": (S, S), "mask": (S, S), "center": [y, x], "sigma": [sy, sx],
        "fit_ok": bool, "channels": (k,) the channels averaged}}, loadable with
        ``torch.load(weights_only=True)``.
    """
    fields = {}
    for layer in layers:
        chosen = spaced_channels(channel_count(model, layer, image_size), channels_per_layer)
        field = receptive_field(
            model,
            layer,
            image_size=image_size,
            samples=samples,
            channels=chosen,
            seed=seed,
            device=device,
            normalize=normalize,
            max_batch=max_batch,
            read_unit=read_unit,
        )
        fields[layer] = {
            "map": field.map.mean(dim=0),
            "mask": field.mask,
            "center": list(field.center),
            "sigma": list(field.sigma),
            "fit_ok": field.fit_ok,
            "channels": chosen,
        }
    return fields


# Bump when a change alters the fields or masks for the same settings: it keys every result file.
RFIELD_VERSION = 1


def field_work(
    checkpoints: dict[int, Path], settings: RFMaskParams, device: torch.device, read_unit: str = "top_left"
) -> list[WorkItem]:
    """One work item per checkpoint: the receptive field of each of ``settings.layers``.

    Its contents are :func:`layer_fields`'s dict, checked before it is written (a NaN,
    all-zero mask stops the stage). Its identity is the checkpoint's and the settings
    that change a field (not ``every``, ``device`` or ``max_batch``).
    """
    shaping = settings.model_dump(include={"layers", "samples", "channels_per_layer", "seed"})
    items = []
    for path in checkpoints.values():

        def compute(path=path) -> dict:
            backbone, meta = load_backbone(path)
            fields = layer_fields(
                backbone,
                settings.layers,
                image_size=meta["image_size"],
                samples=settings.samples,
                channels_per_layer=settings.channels_per_layer,
                seed=settings.seed,
                device=device,
                normalize=meta["normalize"],
                max_batch=settings.max_batch,
                read_unit=read_unit,
            )
            for layer, field in fields.items():
                require_informative(field["mask"], f"RF mask of {path} ({layer})", items_must_differ=False)
            return fields

        # The authors' read unit keeps the identity it had before read_unit existed.
        unit = None if read_unit == "top_left" else read_unit
        key = identity("rfmask", checkpoint_identity(path), shaping, unit, RFIELD_VERSION)
        items.append(WorkItem(Path(path).name, key, compute))
    return items


def field_rows(epochs: list[int], results: list[dict]) -> list[dict]:
    """One plot-table row per (epoch, layer): fitted centre, sigma per axis and their mean, fit_ok."""
    rows = []
    for epoch, fields in zip(epochs, results):
        for layer, field in fields.items():
            (cy, cx), (sy, sx) = field["center"], field["sigma"]
            rows.append(
                {
                    "epoch": epoch,
                    "layer": layer,
                    "center_y": cy,
                    "center_x": cx,
                    "sigma_y": sy,
                    "sigma_x": sx,
                    "sigma": (sy + sx) / 2,
                    "fit_ok": field["fit_ok"],
                }
            )
    return rows
