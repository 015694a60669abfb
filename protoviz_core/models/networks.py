"""The ImageNet networks prototypes are embedded in (paper Sec. 6.4): names and read-out points.

Plain data, so that params validation (``config``) and the embedding code share one list.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Network:
    weights: str  # member of the network's torchvision weights enum, e.g. "IMAGENET1K_V1"
    head: str  # attribute replaced by nn.Identity so the forward pass returns the pooled features
    dim: int  # embedding dimension
    input_size: int  # side of the network's input in pixels


# Keys are torchvision's model names (torchvision.models.get_model).
NETWORKS: dict[str, Network] = {
    "resnet50": Network("IMAGENET1K_V1", "fc", 2048, 224),
    "resnet101": Network("IMAGENET1K_V1", "fc", 2048, 224),
    "resnet152": Network("IMAGENET1K_V1", "fc", 2048, 224),
    "inception_v3": Network("IMAGENET1K_V1", "fc", 2048, 299),
    "vgg16": Network("IMAGENET1K_V1", "classifier", 512, 224),
    "vgg19": Network("IMAGENET1K_V1", "classifier", 512, 224),
    "densenet121": Network("IMAGENET1K_V1", "classifier", 1024, 224),
    "densenet169": Network("IMAGENET1K_V1", "classifier", 1664, 224),
    "densenet201": Network("IMAGENET1K_V1", "classifier", 1920, 224),
    "mobilenet_v2": Network("IMAGENET1K_V1", "classifier", 1280, 224),
}
