"""Helpers the benchmarks share: inputs in the published formats, the Lucent peer, timing.

Run every benchmark from the repository root as a module (``python -m bench.peers.synthesis``),
so that ``bench``, ``protoviz_core`` and ``tests`` import as packages.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from protoviz_core.engine.generators import DeePSiMGenerator
from protoviz_core.engine.units import centre_window, layer_reader
from protoviz_core.models.backbones import BACKBONE_ARCH, NORMALIZE, build_backbone
from protoviz_core.training.checkpoints import CHECKPOINT_FORMAT


def write_checkpoint(path: Path, image_size: int) -> Path:
    """A seeded random ResNet18 backbone in the train stage's checkpoint format."""
    torch.manual_seed(0)
    backbone = build_backbone(BACKBONE_ARCH)
    torch.save(
        {
            "format": CHECKPOINT_FORMAT,
            "arch": BACKBONE_ARCH,
            "epoch": 0,
            "loss": None,
            "training_hash": "gpu-check",
            "image_size": image_size,
            "normalize": {k: list(v) for k, v in NORMALIZE.items()},
            "aug": "clrjit",
            "seed": 1,
            "backbone": backbone.state_dict(),
        },
        path,
    )
    return path


def write_deepsim_weights(path: Path) -> Path:
    """Random DeePSiM fc6 weights under the published file's key names ("G." prefix)."""
    torch.manual_seed(0)
    state = DeePSiMGenerator.random(256).G.state_dict()
    torch.save({f"G.{key}": value for key, value in state.items()}, path)
    return path


def lucent_images(
    model,
    layer: str,
    channels: torch.Tensor,
    size: int,
    thresholds: tuple[int, ...],
    device="cpu",
    read_unit: str = "top_left",
    seed: int = 0,
    **render_options,
) -> tuple[float, torch.Tensor]:
    """Lucent's render_vis, one image per channel in one batch, each maximising its channel's
    centre unit (``read_unit``: the mean over :func:`centre_window`'s positions); torch seeded
    with ``seed``; ``render_options`` go to render_vis (its defaults otherwise).

    Returns:
        seconds, and float (N, 3, size, size) images in [0, 1] at the last threshold.
    """
    from lucent.optvis import objectives, param, render

    with torch.no_grad(), layer_reader(model, layer) as read:
        h, w = read(torch.zeros(1, 3, size, size, device=device)).shape[2:]
    rows, columns = centre_window(h, w, read_unit)
    window = [(y, x) for y in range(rows.start, rows.stop) for x in range(columns.start, columns.stop)]
    objective = sum(
        objectives.neuron(layer.replace(".", "_"), c, x=x, y=y, batch=i) / len(window)
        for i, c in enumerate(channels.tolist())
        for y, x in window
    )
    torch.manual_seed(seed)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        images = render.render_vis(
            model,
            objective,
            lambda: param.image(size, batch=len(channels)),
            thresholds=thresholds,
            show_image=False,
            progress=False,
            fixed_image_size=size,
            **render_options,
        )
    elapsed = time.perf_counter() - started
    return elapsed, torch.as_tensor(np.asarray(images[-1])).permute(0, 3, 1, 2).float()


LAYER_CHANNELS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}  # ResNet18


def smooth_images(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """float (count, 3, size, size) in [0, 1]: 12x12 noise upsampled, like a blurry prototype."""
    coarse = torch.rand(count, 3, 12, 12, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def timed(action) -> float:
    """Seconds ``action()`` takes."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def size_on_disk(path: Path) -> int:
    """Bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
