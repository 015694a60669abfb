import torch

from protoviz_core.models.backbones import NORMALIZE, build_backbone
from protoviz_core.models.learners import SimCLRLearner


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
