"""Prototypes as vectors: in pixel space and in ten ImageNet networks (paper Sec. 6.4).

Each network is read out at its last pooled layer (ResNet's and Inception's
``avgpool``, DenseNet's and MobileNetV2's global pooling before the classifier, and
for VGG the global average of its last convolutional block), with its own input size
and ImageNet normalisation. Prototypes are compared RF-masked (multiplied
by their layer's fitted Gaussian mask, paper Sec. 6.3: black outside the receptive
field) and unmasked.

Weights come from the torch hub cache (downloaded there on first use when online).
``weights="random"`` builds the same networks untrained: for tests and the offline
demo only, and it is recorded wherever its numbers go.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

# Bump when a change alters embeddings (e.g. how random weights are drawn): it keys the cache.
EMBEDDING_VERSION = 2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Network:
    build: Callable[..., nn.Module]  # torchvision constructor
    weights: str  # name of its ImageNet weights enum member, e.g. "ResNet50_Weights.IMAGENET1K_V1"
    head: str  # attribute replaced by nn.Identity so the forward pass returns the pooled features
    dim: int  # embedding dimension
    input_size: int  # side of the network's input in pixels


NETWORKS: dict[str, Network] = {
    "resnet50": Network(torchvision.models.resnet50, "ResNet50_Weights.IMAGENET1K_V1", "fc", 2048, 224),
    "resnet101": Network(torchvision.models.resnet101, "ResNet101_Weights.IMAGENET1K_V1", "fc", 2048, 224),
    "resnet152": Network(torchvision.models.resnet152, "ResNet152_Weights.IMAGENET1K_V1", "fc", 2048, 224),
    "inception_v3": Network(torchvision.models.inception_v3, "Inception_V3_Weights.IMAGENET1K_V1", "fc", 2048, 299),
    "vgg16": Network(torchvision.models.vgg16, "VGG16_Weights.IMAGENET1K_V1", "classifier", 512, 224),
    "vgg19": Network(torchvision.models.vgg19, "VGG19_Weights.IMAGENET1K_V1", "classifier", 512, 224),
    "densenet121": Network(torchvision.models.densenet121, "DenseNet121_Weights.IMAGENET1K_V1", "classifier", 1024, 224),
    "densenet169": Network(torchvision.models.densenet169, "DenseNet169_Weights.IMAGENET1K_V1", "classifier", 1664, 224),
    "densenet201": Network(torchvision.models.densenet201, "DenseNet201_Weights.IMAGENET1K_V1", "classifier", 1920, 224),
    "mobilenet_v2": Network(torchvision.models.mobilenet_v2, "MobileNet_V2_Weights.IMAGENET1K_V1", "classifier", 1280, 224),
}
SPACES = ("pixel", *NETWORKS)


class WeightsError(FileNotFoundError):
    """Pretrained weights are neither cached nor downloadable; says which file and how."""


def _weights_enum(network: Network):
    enum_name, member = network.weights.split(".")
    return getattr(torchvision.models, enum_name)[member]


def weights_file(name: str) -> Path:
    """Where the torch hub cache keeps ``name``'s ImageNet weights."""
    url = _weights_enum(NETWORKS[name]).url
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def load_network(name: str, weights: str = "imagenet") -> nn.Module:
    """An embedding network in eval mode: images (B, 3, s, s) normalised -> (B, dim).

    Args:
        name: one of :data:`NETWORKS`.
        weights: ``imagenet`` (hub cache, downloaded when missing and online) or
            ``random`` (untrained, seeded so runs agree; tests and offline demos only).

    Raises:
        ValueError: unknown name or weights.
        WeightsError: ImageNet weights not cached and not downloadable.
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown embedding network {name!r}; choose from {', '.join(NETWORKS)}")
    network = NETWORKS[name]
    extra = {"aux_logits": False, "init_weights": False} if name == "inception_v3" else {}
    with torch.random.fork_rng():  # "random" weights are the same in every run: seeded here
        torch.manual_seed(0)
        model = network.build(weights=None, **extra)
    if weights == "imagenet":
        url = _weights_enum(network).url
        try:
            state = torch.hub.load_state_dict_from_url(url, progress=False, weights_only=True)
        except Exception as exc:
            raise WeightsError(
                f"{weights_file(name)}: ImageNet weights of {name} not cached and the download failed "
                f"({type(exc).__name__}: {exc}); fetch {url} into {weights_file(name).parent}, "
                "or set embed.weights: random for an offline demo"
            ) from None
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
        model.load_state_dict(state)
    elif weights != "random":
        raise ValueError(f"weights must be 'imagenet' or 'random', got {weights!r}")
    setattr(model, network.head, nn.Identity())
    if name.startswith("vgg"):
        # VGG pools to 7x7 before its classifier; the global average over that map is
        # the equivalent of ResNet's avgpool (512-d instead of 25,088).
        model.avgpool = nn.AdaptiveAvgPool2d(1)
    return model.eval()


def embed_images(
    images: torch.Tensor,
    space: str,
    *,
    network: nn.Module | None = None,
    mask: torch.Tensor | None = None,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Embeddings of uint8 prototypes (N, 3, S, S), optionally RF-masked.

    Args:
        space: ``pixel`` (the flattened image in [0, 1]) or a name in :data:`NETWORKS`.
        network: that network from :func:`load_network` (not needed for ``pixel``).
        mask: (S, S) in [0, 1], multiplied into every image before embedding.
        batch_size: images per forward pass (the memory budget).

    Returns:
        float32 (N, D) on the CPU: D = 3*S*S for pixel space, else the network's dim.
        On CUDA the networks run in bfloat16.
    """
    device = torch.device(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device).float() / 255  # (B, 3, S, S)
        if mask is not None:
            batch = batch * mask.to(device)
        if space == "pixel":
            out.append(batch.flatten(start_dim=1).cpu())
            continue
        size = NETWORKS[space].input_size
        batch = F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out.append(network.to(device)((batch - mean) / std).float().flatten(start_dim=1).cpu())
    return torch.cat(out)


def embed_epoch(
    store,
    epoch: int,
    space: str,
    masks: dict[str, torch.Tensor],
    *,
    network: nn.Module | None,
    batch_size: int,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Embeddings of every prototype of one epoch, masked and plain, keyed like the store.

    Args:
        store: an open :class:`~protoviz_core.store.PrototypeStore`.
        masks: {layer: (S, S) RF mask} for this epoch.

    Returns:
        {"<layer>/r<repeat>/plain": float16 (C, D), "<layer>/r<repeat>/masked": ...,
        "<layer>/r<repeat>/channels": int64 (C,)}, channels in ascending order.
    """
    vectors = {}
    rows_of_epoch = store.select(epoch=epoch)
    for (layer, repeat), rows in rows_of_epoch.groupby(["layer", "repeat"]):
        rows = rows.sort_values("channel")
        images = store.images(rows)
        prefix = f"{layer}/r{repeat}"
        for kind, mask in (("plain", None), ("masked", masks[layer])):
            embedded = embed_images(images, space, network=network, mask=mask, batch_size=batch_size, device=device)
            vectors[f"{prefix}/{kind}"] = embedded.half()
        vectors[f"{prefix}/channels"] = torch.as_tensor(rows["channel"].to_numpy().copy())
    return vectors
