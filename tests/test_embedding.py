import pytest
import torch

import protoviz_core.embedding as embedding
from protoviz_core.embedding import NETWORKS, WeightsError, embed_images, load_network


@pytest.mark.parametrize("name", list(NETWORKS))
def test_every_network_gives_its_documented_dimension(name):
    torch.manual_seed(0)
    network = load_network(name, weights="random")
    images = torch.randint(0, 256, (2, 3, 20, 20), dtype=torch.uint8)
    vectors = embed_images(images, name, network=network, batch_size=1)
    assert vectors.shape == (2, NETWORKS[name].dim) and torch.isfinite(vectors).all()


def test_pixel_space_and_masking():
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    mask = torch.zeros(4, 4)
    mask[1, 2] = 0.5
    plain = embed_images(images, "pixel")
    masked = embed_images(images, "pixel", mask=mask)
    assert plain.shape == (2, 48) and torch.all(plain == 1)
    assert masked.view(2, 3, 4, 4)[:, :, 1, 2].eq(0.5).all() and masked.sum() == 2 * 3 * 0.5


def test_offline_without_cached_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(embedding.torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as caught:
        load_network("resnet50")
    message = str(caught.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet50-0676ba61.pth") in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message and "random" in message


def test_unknown_network_and_weights_are_refused():
    with pytest.raises(ValueError, match="resnet50"):
        load_network("alexnet")
    with pytest.raises(ValueError, match="imagenet"):
        load_network("resnet50", weights="places365")


def test_params_schema_lists_exactly_the_networks_we_have():
    from protoviz_core.config import EMBEDDING_NETS

    assert tuple(NETWORKS) == EMBEDDING_NETS


def test_random_weights_are_the_same_in_every_run():
    first, second = load_network("mobilenet_v2", "random"), load_network("mobilenet_v2", "random")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
