"""The backbones a learner trains: torchvision CNNs without their classifier, and their layers.

Paper Sec. 6.1: a torchvision ResNet18, whose 512-d pooled output is what the probes read
(ResNet34, ResNet50 and MobileNetV2 are this project's additions). The learners' heads, losses
and augmentations are in :mod:`protoviz_core.models.learners`.
"""

from __future__ import annotations

import functools

import torch
import torchvision
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
