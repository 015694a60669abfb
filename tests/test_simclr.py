import numpy as np
import pytest
import torch
from PIL import Image

from protoviz_core.learners import SimCLRLearner
from protoviz_core.simclr import NORMALIZE, build_backbone, simclr_transform


def _unnormalise(view: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(NORMALIZE["mean"])[:, None, None]
    std = torch.tensor(NORMALIZE["std"])[:, None, None]
    return view * std + mean  # (3, S, S) in [0, 1]


def _max_colour_change(aug: str, views: int = 40) -> float:
    """Largest deviation of any view's pixels from a uniform image's colour."""
    colour = np.array([200, 40, 90], dtype=np.uint8)
    image = Image.fromarray(np.broadcast_to(colour, (32, 32, 3)).copy())
    transform = simclr_transform(aug, 32)
    torch.manual_seed(0)
    target = torch.tensor(colour / 255.0, dtype=torch.float32)[:, None, None]
    worst = 0.0
    for _ in range(views // 2):
        for view in transform(image):
            worst = max(worst, (_unnormalise(view) - target).abs().max().item())
    return worst


def test_keepclr_views_keep_the_colour():
    # Crops, flips and blur of a uniform image leave it uniform: only colour
    # jitter or grayscale could change its colour.
    assert _max_colour_change("keepclr") < 2 / 255


def test_clrjit_views_change_the_colour():
    assert _max_colour_change("clrjit") > 0.1


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="clrjit"):
        simclr_transform("none", 32)


def test_shapes_backbone_512_projection_128():
    model = SimCLRLearner(build_backbone()).eval()
    images = torch.rand(2, 3, 32, 32)
    assert model.backbone(images).shape == (2, 512)
    assert [z.shape for z in model([images, images])] == [(2, 128), (2, 128)]
    assert {"layer1", "layer2", "layer3", "layer4"} <= dict(build_backbone().named_children()).keys()


def test_the_backbone_is_normalised_as_lightly_normalises_its_views():
    from lightly.transforms.utils import IMAGENET_NORMALIZE as LIGHTLY_NORMALIZE

    assert NORMALIZE["mean"] == tuple(LIGHTLY_NORMALIZE["mean"])
    assert NORMALIZE["std"] == tuple(LIGHTLY_NORMALIZE["std"])
