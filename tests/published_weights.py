"""Random weights written in the exact format of the published files the paper run loads.

The real files cannot be downloaded here, so tests stand in files of the same shape:

- torchvision's ImageNet files (``$TORCH_HOME/hub/checkpoints/<name of the URL>``):
  a plain dict of float32 tensors under the published key names, without
  ``num_batches_tracked`` (the published files predate it). DenseNet files keep the
  legacy names ``denselayer1.norm.1.weight`` that torchvision's builder renames;
  Inception v3's file holds its auxiliary classifier (``AuxLogits.*``), which the
  builder loads and then drops. Values: :func:`protoviz_core.measures.embedding.random_network`
  (seeded, batch-norm statistics of noise), so embeddings carry information.
- DeePSiM fc6, ``upconvGAN_fc6.pt`` as in binxu/DeePSim_DosovitskiyBrox2016: the
  state dict of the generator's ``nn.Sequential`` (keys ``defc7.weight`` ..
  ``deconv0.bias``), float32. Values: ``DeePSiMGenerator.random`` (Kaiming, output
  scaled like real images), checked against the published key and shape list below.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torchvision

from protoviz_core.engine.generators import DeePSiMGenerator
from protoviz_core.measures.embedding import NETWORKS, random_network, weights_file

# (key, shape) of upconvGAN_fc6.pt, written from the published architecture (DESIGN: DeePSiM fc6).
DEEPSIM_FC6_PUBLISHED = [
    ("defc7", (4096, 4096)),
    ("defc6", (4096, 4096)),
    ("defc5", (4096, 4096)),
    ("deconv5", (256, 256, 4, 4)),
    ("conv5_1", (256, 512, 3, 3)),
    ("deconv4", (512, 256, 4, 4)),
    ("conv4_1", (256, 256, 3, 3)),
    ("deconv3", (256, 128, 4, 4)),
    ("conv3_1", (128, 128, 3, 3)),
    ("deconv2", (128, 64, 4, 4)),
    ("deconv1", (64, 32, 4, 4)),
    ("deconv0", (32, 3, 4, 4)),
]

_DENSENET_MODERN = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.")


def published_imagenet_state(name: str) -> dict[str, torch.Tensor]:
    """Random weights of torchvision network ``name`` laid out as its published ImageNet file."""
    state = dict(random_network(name).state_dict())
    if (
        name == "inception_v3"
    ):  # the auxiliary classifier, as Inception3 builds it on its 768-channel Mixed_6e
        with torch.random.fork_rng():
            torch.manual_seed(1)
            aux = torchvision.models.inception.InceptionAux(768, 1000)
        state.update({f"AuxLogits.{k}": v for k, v in aux.state_dict().items()})
    state = {k: v.float().contiguous() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if name.startswith("densenet"):
        state = {_DENSENET_MODERN.sub(r"\1.\2.", k): v for k, v in state.items()}
    return state


def write_published_imagenet(names=tuple(NETWORKS)) -> list[Path]:
    """Write each network's published-format file into the hub cache ($TORCH_HOME/hub/checkpoints)."""
    written = []
    for name in names:
        path = weights_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file():  # torchvision's IMAGENET1K_V1 files predate PyTorch's zip format
            torch.save(published_imagenet_state(name), path, _use_new_zipfile_serialization=False)
        written.append(path)
    return written


def write_published_deepsim(path: Path) -> Path:
    """Random DeePSiM fc6 weights as ``upconvGAN_fc6.pt`` (keys, shapes, dtype as published)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        state = DeePSiMGenerator.random(image_size=96).G.state_dict()
    expected = {}
    for layer, shape in DEEPSIM_FC6_PUBLISHED:
        expected[f"{layer}.weight"] = shape
        # Linear weights are (out, in); transposed convolutions' are (in, out, k, k).
        expected[f"{layer}.bias"] = (shape[0],) if len(shape) == 2 else (shape[1],)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert all(v.dtype == torch.float32 for v in state.values())
    torch.save(state, path)
    return path
