from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from protoviz_core import receptive_field
from protoviz_core.measures.rfield import fit_gaussian, gaussian_mask
from protoviz_core.models.backbones import build_backbone

SIZE = 17  # odd: the centre unit's window is centred on the image centre (8, 8)


def _gaussian_kernel(k: int) -> torch.Tensor:
    r = torch.arange(k) - (k - 1) / 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / 4)
    return g.expand(2, 3, k, k).clone()  # (out=2, in=3, k, k), symmetric


def _conv_stack(kernels):
    layers = OrderedDict()
    in_channels = 3
    for i, k in enumerate(kernels):
        conv = nn.Conv2d(in_channels, 2, k, bias=False)  # no padding: field grows by k - 1
        with torch.no_grad():
            conv.weight.copy_(_gaussian_kernel(k)[:, :in_channels])
        layers[f"conv{i}"] = conv
        in_channels = 2
    return nn.Sequential(layers)


@pytest.mark.parametrize("kernels, field", [([5], 5), ([3, 3], 5), ([3, 5, 3], 9)])
def test_map_is_non_zero_exactly_inside_the_theoretical_field(kernels, field):
    model = _conv_stack(kernels)
    result = receptive_field(model, f"conv{len(kernels) - 1}", image_size=SIZE, samples=8, device="cpu")
    inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    low = (SIZE - field) // 2
    inside[low : low + field, low : low + field] = True
    assert (result.map[inside] > 0).all()
    assert (result.map[~inside] == 0).all()
    assert result.fit_ok
    assert result.center == pytest.approx((8.0, 8.0), abs=1e-3)
    assert result.mask.shape == (SIZE, SIZE) and result.mask.max() <= 1 and result.mask[8, 8] > 0.99


def test_fit_recovers_a_known_gaussian():
    y, x = np.mgrid[0:30, 0:40]
    field = 3.0 * np.exp(-((y - 12.5) ** 2 / (2 * 4.0**2) + (x - 21.0) ** 2 / (2 * 6.5**2)))
    fit = fit_gaussian(field)
    assert fit.fit_ok
    assert fit.center == pytest.approx((12.5, 21.0), abs=1e-3)
    assert fit.sigma == pytest.approx((4.0, 6.5), abs=1e-3)


def test_flat_map_falls_back_without_crashing():
    fit = fit_gaussian(np.zeros((10, 12)))
    assert not fit.fit_ok and fit.center == (4.5, 5.5)
    mask = gaussian_mask((10, 12), fit)
    assert torch.isfinite(mask).all() and mask.max() <= 1


def test_per_channel_and_mean_modes():
    model = _conv_stack([3, 3])
    mean = receptive_field(model, "conv1", image_size=SIZE, samples=4, device="cpu")
    per_channel = receptive_field(model, "conv1", image_size=SIZE, samples=4, channels=[0, 1], device="cpu")
    assert mean.map.shape == (SIZE, SIZE) and per_channel.map.shape == (2, SIZE, SIZE)
    torch.testing.assert_close(per_channel.map.mean(0), mean.map)
    chunked = receptive_field(model, "conv1", image_size=SIZE, samples=4, device="cpu", max_batch=3)
    torch.testing.assert_close(chunked.map, mean.map)


def test_a_centred_unit_of_an_even_map_looks_at_the_image_centre_and_the_authors_unit_does_not():
    """At 48 px ResNet18's layer4 map is 2 x 2: the authors' unit (0, 0) has its gradient
    receptive field in the image's corner; the centred unit's is symmetric about the centre."""
    torch.manual_seed(0)
    backbone = build_backbone().eval()
    peaks = {}
    for read_unit in ("top_left", "centred"):
        field = receptive_field(
            backbone, "layer4", image_size=48, samples=4, channels=[0, 1, 2], read_unit=read_unit
        )
        peaks[read_unit] = field.center
    centre = 23.5
    assert max(abs(c - centre) for c in peaks["centred"]) < 4
    assert min(abs(c - centre) for c in peaks["top_left"]) > 8
