"""Prototypes as vectors: in pixel space and in ten ImageNet networks (paper Sec. 6.4).

Each network is read out at its last pooled layer (ResNet's and Inception's
``avgpool``, DenseNet's and MobileNetV2's global pooling before the classifier, and
for VGG the global average of its last convolutional block), with its own input size
and ImageNet normalisation. Prototypes are compared RF-masked (multiplied
by their layer's fitted Gaussian mask, paper Sec. 6.3: black outside the receptive
field) and unmasked.

ImageNet networks are built by torchvision's own builders with their weights enums,
so whatever the builder does beyond ``load_state_dict`` (DenseNet's legacy key
names, Inception's ``transform_input``, a dropped auxiliary head) is torchvision's
doing, not a copy of it. The files come from the torch hub cache
(``$TORCH_HOME/hub/checkpoints``), downloaded there on first use when online, and are
read with ``weights_only`` loading.

``weights="random"`` builds the same networks untrained, for tests and the offline
demo only (recorded wherever its numbers go). Their batch-norm statistics are
measured on seeded noise images of many scales, because a freshly initialised network in eval mode
normalises with running mean 0 and variance 1, so its activations shrink or grow
layer after layer (untrained MobileNetV2's pooled features are about 1e-9, which
float16 stores as 0).
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from protoviz_core.engine.normalization import normalize_images
from protoviz_core.infra.checks import require_informative
from protoviz_core.infra.errors import MissingInputError, ProtovizError
from protoviz_core.infra.work import WorkItem, epoch_file, identity
from protoviz_core.measures.masks import MaskSet, mask_digest
from protoviz_core.models.networks import NETWORKS

if TYPE_CHECKING:
    from protoviz_core.prototypes.store import PrototypeStore

# Bump when a change alters embeddings (e.g. how random weights are drawn): it keys the cache.
EMBEDDING_VERSION = 5  # 5: each layer carries the mask it applied


SPACES = ("pixel", *NETWORKS)


class WeightsError(ProtovizError, FileNotFoundError):
    """Pretrained weights are neither cached nor downloadable, or unreadable; says which file and how."""


def imagenet_weights(name: str) -> torchvision.models.WeightsEnum:
    """The torchvision weights enum member of network ``name`` (its URL, transforms, metadata)."""
    return torchvision.models.get_model_weights(name)[NETWORKS[name].weights]


def weights_file(name: str) -> Path:
    """Where the torch hub cache keeps ``name``'s ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(imagenet_weights(name).url).name


@contextmanager
def _weights_only_loading() -> Iterator[None]:
    """Make every ``torch.load`` inside refuse pickled code, as if called with ``weights_only=True``.

    torchvision's builders load hub files with ``weights_only=False``; PyTorch's own
    switch ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` overrides that for the builder's call.
    """
    names = ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")  # torch refuses both set
    previous = {name: os.environ.pop(name, None) for name in names}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for name, value in previous.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def _build_imagenet(name: str) -> nn.Module:
    """torchvision's builder with its ImageNet weights enum (hub cache; hash-checked download)."""
    path, url = weights_file(name), imagenet_weights(name).url
    try:
        with _weights_only_loading():
            model = torchvision.models.get_model(name, weights=imagenet_weights(name))
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if path.is_file():
            raise WeightsError(
                f"{path}: not loadable as {name}'s ImageNet weights ({reason}); "
                f"delete it and fetch {url} again"
            ) from None
        raise WeightsError(
            f"{path}: ImageNet weights of {name} not cached and the download failed ({reason}); "
            f"fetch {url} into {path.parent}, or set embed.weights: random for an offline demo"
        ) from None
    if name == "inception_v3":  # its builder insists on loading the auxiliary head; it is never read here
        model.aux_logits, model.AuxLogits = False, None
    return model


def random_network(name: str) -> nn.Module:
    """Network ``name`` with seeded random weights and batch-norm statistics of noise, eval mode.

    The same in every run (tests and the offline demo only). Inception is built as
    torchvision builds it for ImageNet weights (``transform_input=True``), without
    its auxiliary head.
    """
    extra = (
        {"aux_logits": False, "init_weights": False, "transform_input": True}
        if name == "inception_v3"
        else {}
    )
    size = NETWORKS[name].input_size
    with torch.random.fork_rng():  # seeded here, whatever the caller's random state
        torch.manual_seed(0)
        model = torchvision.models.get_model(name, weights=None, **extra)
        noise = _multiscale_noise(size)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batch
    model.train()
    with torch.no_grad():
        model(normalize_images(noise))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model.eval()


def _multiscale_noise(size: int) -> torch.Tensor:
    """(8, 3, size, size) uniform noise drawn at 4 to 128 px and upsampled: smooth and fine images.

    White noise alone calibrates batch norm to fine texture only, and smooth images
    (prototypes are smooth) then fall below every ReLU threshold of an untrained
    DenseNet, which maps them all to one vector.
    """
    return torch.cat(
        [
            F.interpolate(
                torch.rand(1, 3, side, side), size=(size, size), mode="bilinear", align_corners=False
            )
            for side in (4, 8, 16, 32, 48, 64, 96, 128)
        ]
    )


def load_network(name: str, weights: str = "imagenet") -> nn.Module:
    """An embedding network in eval mode: images (B, 3, s, s) normalised -> (B, dim).

    Args:
        name: one of :data:`NETWORKS`.
        weights: ``imagenet`` (torchvision's builder and weights enum; hub cache,
            downloaded when missing and online) or ``random`` (:func:`random_network`;
            tests and offline demos only).

    Raises:
        ValueError: unknown name or weights.
        WeightsError: ImageNet weights not cached and not downloadable, or unloadable.
    """
    if name not in NETWORKS:
        raise ValueError(f"unknown embedding network {name!r}; choose from {', '.join(NETWORKS)}")
    if weights == "imagenet":
        model = _build_imagenet(name)
    elif weights == "random":
        model = random_network(name)
    else:
        raise ValueError(f"weights must be 'imagenet' or 'random', got {weights!r}")
    setattr(model, NETWORKS[name].head, nn.Identity())
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
        The networks run in float32 on any device.
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
        # float32 on a GPU too: bfloat16 moves the distances measured on these embeddings
        # (bench/choices/bf16_scores.py)
        with torch.no_grad():
            out.append(network.to(device)(normalize_images(batch)).float().flatten(start_dim=1).cpu())
    return torch.cat(out)


def stored_dtype(space: str) -> torch.dtype:
    """How a space's vectors are stored: pixel values (k/255 times a mask in [0, 1]) fit
    float16; network features have any scale, so they keep float32."""
    return torch.float16 if space == "pixel" else torch.float32


def embed_epoch(
    store: PrototypeStore,
    epoch: int,
    space: str,
    masks: dict[str, torch.Tensor],
    *,
    network: nn.Module | None,
    batch_size: int,
    device: torch.device,
) -> dict[str, dict[str, torch.Tensor]]:
    """Embeddings of every prototype of one epoch, masked and plain, repeats as a dimension.

    Args:
        store: an open :class:`~protoviz_core.prototypes.store.PrototypeStore`.
        masks: {layer: (S, S) RF mask} for this epoch.

    Returns:
        {layer: {"channels": int64 (C,) ascending, "repeats": int64 (R,) ascending,
        "plain": (R, C, D), "masked": (R, C, D), "mask": float32 (S, S) the RF mask applied}},
        vectors in :func:`stored_dtype` (the mask weights pixel space's ``weighted_mse``).

    Raises:
        DegenerateError: a mask or a set of vectors is NaN/inf, all zero, or the same
            for every prototype (nothing is returned, so nothing is written).
        MissingInputError: the repeats of a layer hold different channels.
    """
    for layer, mask in masks.items():
        require_informative(
            mask,
            f"RF mask used for epoch {epoch}, {layer} (rfmask stage output; rerun it)",
            items_must_differ=False,
        )
    embedded = {}
    for layer, of_layer in store.select(epoch=epoch).groupby("layer", sort=False):
        repeats = sorted(int(r) for r in of_layer["repeat"].unique())
        channels = sorted(int(c) for c in of_layer[of_layer["repeat"] == repeats[0]].channel)
        vectors = {"plain": [], "masked": []}
        for repeat in repeats:
            rows = of_layer[of_layer["repeat"] == repeat].sort_values("channel")
            if rows.channel.tolist() != channels:
                raise MissingInputError(
                    f"{store.root}: epoch {epoch} {layer}: repeat {repeat} holds other channels than "
                    f"repeat {repeats[0]}; rerun the extract stage"
                )
            images = store.images(rows)
            for kind, mask in (("plain", None), ("masked", masks[layer])):
                stored = embed_images(
                    images, space, network=network, mask=mask, batch_size=batch_size, device=device
                ).to(stored_dtype(space))
                require_informative(
                    stored, f"{space} embeddings of epoch {epoch}, {layer}, repeat {repeat} ({kind})"
                )
                vectors[kind].append(stored)
        embedded[layer] = {
            "channels": torch.tensor(channels),
            "repeats": torch.tensor(repeats),
            **{kind: torch.stack(parts) for kind, parts in vectors.items()},
            "mask": masks[layer].float(),
        }
    return embedded


def embed_work(
    store: PrototypeStore, masks: MaskSet, space: str, *, weights: str, batch_size: int, device: torch.device
) -> list[WorkItem]:
    """One work item per epoch of ``store``: :func:`embed_epoch` in ``space``, named ``eXXXX.pt``.

    The identity is the epoch's shards' identities, the masks it applies (their values),
    the space, the weights and :data:`EMBEDDING_VERSION`. The network is built on first
    use and shared by the items.
    """
    layers = list(dict.fromkeys(store.index.layer))
    network = functools.cache(lambda: None if space == "pixel" else load_network(space, weights))
    items = []
    for epoch in sorted(int(e) for e in store.index.epoch.unique()):
        chosen = masks.for_epoch(epoch, layers)
        key = identity(
            "embeddings",
            space,
            weights,
            EMBEDDING_VERSION,
            store.shard_keys(epoch=epoch),
            mask_digest(chosen),
        )

        def compute(epoch=epoch, chosen=chosen) -> dict:
            return embed_epoch(
                store, epoch, space, chosen, network=network(), batch_size=batch_size, device=device
            )

        items.append(WorkItem(epoch_file(epoch), key, compute))
    return items
