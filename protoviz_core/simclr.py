"""SimCLR (Chen et al. 2020) with lightly: the backbone and the augmentations (the learner
itself is :class:`protoviz_core.learners.SimCLRLearner`).

Paper Sec. 6.1: torchvision ResNet18 backbone (its 512-d pooled output is what the
probes read), lightly's ``SimCLRProjectionHead(512, 512, 128)`` and ``NTXentLoss``.
The two conditions differ only in the augmentation:

- ``clrjit``: lightly's default ``SimCLRTransform`` (colour jitter p=0.8, grayscale p=0.2);
- ``keepclr``: the same with ``cj_prob=0`` and ``random_gray_scale=0``.
"""

from __future__ import annotations

import functools

import torch
import torchvision
from lightly.transforms import SimCLRTransform
from torch import nn

from protoviz_core.engine.normalization import IMAGENET_NORMALIZE

BACKBONE_ARCH = "resnet18"  # the paper's
# The backbones train.backbone offers (config.BACKBONES), with the width of their pooled features.
FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "mobilenet_v2": 1280}
FEATURE_DIM = FEATURE_DIMS[BACKBONE_ARCH]
PROJECTION_DIMS = (512, 512, 128)  # (input, hidden, output) of the paper's projection head
# What the backbone is trained with: lightly's SimCLRTransform normalises with the ImageNet statistics.
NORMALIZE = IMAGENET_NORMALIZE


def build_backbone(arch: str = BACKBONE_ARCH) -> nn.Module:
    """A torchvision CNN without its classifier: images (B, 3, H, W) -> features (B, D),
    D = ``FEATURE_DIMS[arch]`` (ResNet18: 512).

    Module names are torchvision's (ResNets: ``conv1``, ``layer1`` .. ``layer4``, ``avgpool``;
    MobileNetV2: ``features.0`` .. ``features.18``), so layers are addressed as in the paper
    (``layer3``, ``layer3.1.conv2``). MobileNetV2 is the non-ResNet: its strided convolutions
    are padded, so it runs on images as small as the tests' 24 px.

    Raises:
        ValueError: an architecture not in ``FEATURE_DIMS``; names ``train.backbone``.
    """
    if arch not in FEATURE_DIMS:
        raise ValueError(f"train.backbone: {arch!r} is not one of {', '.join(FEATURE_DIMS)}")
    backbone = torchvision.models.get_model(arch, weights=None)
    if arch.startswith("resnet"):
        backbone.fc = nn.Identity()
    else:  # MobileNetV2 pools globally before its classifier
        backbone.classifier = nn.Identity()
    return backbone


@functools.cache
def backbone_layer_names(arch: str = BACKBONE_ARCH) -> tuple[str, ...]:
    """Every dotted module name of the backbone (``layer1``, ``layer3.1.conv2``, ...)."""
    return tuple(name for name, _ in build_backbone(arch).named_modules() if name)


@functools.cache
def backbone_layer_widths(arch: str = BACKBONE_ARCH) -> dict[str, int]:
    """{dotted module name: channels of its output} for the backbone's modules with a 4-D output
    (one 32 px probe image; the count of channels does not depend on the image size)."""
    backbone, widths, hooks = build_backbone(arch).eval(), {}, []

    def record(name: str):
        def hook(module, inputs, output) -> None:  # returns None: the output is left as it is
            if output.dim() == 4:
                widths.setdefault(name, output.shape[1])

        return hook

    for name, module in backbone.named_modules():
        if name:
            hooks.append(module.register_forward_hook(record(name)))
    with torch.no_grad():
        backbone(torch.zeros(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    return widths


def simclr_transform(
    aug: str,
    image_size: int,
    *,
    min_scale: float = 0.08,
    cj_strength: float = 1.0,
    gaussian_blur: float = 0.5,
) -> SimCLRTransform:
    """lightly's SimCLR augmentation for one condition; returns two normalised views.

    Args:
        aug: ``clrjit`` (SimCLR default) or ``keepclr`` (no colour jitter, no grayscale).
        image_size: side of the output views in pixels.
    """
    if aug not in ("clrjit", "keepclr"):
        raise ValueError(f"aug must be 'clrjit' or 'keepclr', got {aug!r}")
    keep_colour = aug == "keepclr"
    return SimCLRTransform(
        input_size=image_size,
        cj_prob=0.0 if keep_colour else 0.8,
        cj_strength=cj_strength,
        random_gray_scale=0.0 if keep_colour else 0.2,
        min_scale=min_scale,
        gaussian_blur=gaussian_blur,
        normalize=IMAGENET_NORMALIZE,
    )
