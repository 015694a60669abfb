import numpy as np
import torch

from protoviz_core.models.backbones import NORMALIZE, build_backbone
from protoviz_core.models.features import extract_features


def test_features_are_eval_mode_and_match_a_plain_forward():
    torch.manual_seed(0)
    backbone = build_backbone().train()  # extract_features must switch to eval mode
    images = np.random.default_rng(0).integers(0, 256, (5, 3, 24, 24), dtype=np.uint8)
    features = extract_features(backbone, images, NORMALIZE, batch_size=2)
    assert features.shape == (5, 512) and not backbone.training
    mean = torch.tensor(NORMALIZE["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(NORMALIZE["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = backbone((torch.from_numpy(images).float() / 255 - mean) / std)
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)
