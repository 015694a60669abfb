import pytest
import torch
import torchvision

import protoviz_core.measures.embedding as embedding
from protoviz_core.engine.normalization import IMAGENET_NORMALIZE
from protoviz_core.infra.checks import DegenerateError
from protoviz_core.measures.embedding import (
    NETWORKS,
    WeightsError,
    embed_epoch,
    embed_images,
    imagenet_weights,
    load_network,
)
from tests.published_weights import published_imagenet_state


@pytest.mark.parametrize("name", ["resnet50", "inception_v3", "vgg16", "densenet121", "mobilenet_v2"])
def test_random_networks_of_every_family_give_their_documented_dimension(name):
    """weights="random" (the offline demo) for one network per family; every network's
    dimension with its ImageNet weights is checked against torchvision below."""
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


def _torchvision_pooled_features(name: str, images: torch.Tensor) -> torch.Tensor:
    """Reference: torchvision's complete model with its ImageNet weights, read at the input of
    its classifier (VGG: its last conv block, averaged), on images prepared as embed_images does."""
    model = torchvision.models.get_model(name, weights=imagenet_weights(name)).eval()
    size = NETWORKS[name].input_size
    batch = torch.nn.functional.interpolate(
        images.float() / 255, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    batch = torchvision.transforms.functional.normalize(
        batch, IMAGENET_NORMALIZE["mean"], IMAGENET_NORMALIZE["std"]
    )
    captured = []
    if name.startswith("vgg"):
        hook = model.features.register_forward_hook(lambda m, i, out: captured.append(out.mean(dim=(2, 3))))
    else:
        head = getattr(model, NETWORKS[name].head)
        hook = head.register_forward_pre_hook(lambda m, inputs: captured.append(inputs[0].flatten(1)))
    with torch.no_grad():
        model(batch)
    hook.remove()
    return captured[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NETWORKS))
def test_published_imagenet_files_embed_exactly_as_torchvisions_model(
    name, published_torch_home, monkeypatch
):
    monkeypatch.setenv("TORCH_HOME", str(published_torch_home))
    published = torch.load(embedding.weights_file(name), weights_only=True)
    assert not any(k.endswith("num_batches_tracked") for k in published)
    if name.startswith("densenet"):  # legacy key names: a plain load_state_dict cannot take them
        assert any(".norm.1." in k for k in published)
        with pytest.raises(RuntimeError, match="state_dict"):
            torchvision.models.get_model(name, weights=None).load_state_dict(published)
    if name == "inception_v3":
        assert any(k.startswith("AuxLogits.") for k in published)

    ours = load_network(name, "imagenet")
    if name == "inception_v3":
        assert ours.transform_input  # as torchvision builds it for its ImageNet weights
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8, generator=generator)
    vectors = embed_images(images, name, network=ours)
    reference = _torchvision_pooled_features(name, images)
    assert vectors.shape == (3, NETWORKS[name].dim)
    torch.testing.assert_close(vectors, reference, rtol=1e-4, atol=1e-4 * reference.abs().max().item())


def test_published_format_substitute_matches_torchvisions_own_layout():
    """The substitute's keys are what torchvision's builder expects after its own renaming."""
    state = published_imagenet_state("densenet121")
    renamed = {
        k.replace(".norm.1.", ".norm1.")
        .replace(".conv.1.", ".conv1.")
        .replace(".norm.2.", ".norm2.")
        .replace(".conv.2.", ".conv2."): v
        for k, v in state.items()
    }
    expected = torchvision.models.densenet121(weights=None).state_dict()
    assert set(renamed) == {k for k in expected if not k.endswith("num_batches_tracked")}


def test_offline_without_cached_weights_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as caught:
        load_network("resnet50")
    message = str(caught.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth") in message
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in message and "random" in message


def test_the_cli_prints_a_weights_error_as_one_line(tmp_path, monkeypatch, capsys):
    from stages import _cli

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(
        torch.hub, "download_url_to_file", lambda *a, **k: (_ for _ in ()).throw(OSError("offline"))
    )
    assert _cli.run(lambda argv: load_network("densenet121"), []) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "densenet121-a639ec97.pth" in line


def test_a_garbage_weights_file_is_named_without_running_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = embedding.weights_file("mobilenet_v2")
    path.parent.mkdir(parents=True)
    torch.save({"features.0.0.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match=f"{path}: not loadable as mobilenet_v2's ImageNet weights"):
        load_network("mobilenet_v2")


class _Payload:
    """A pickled object whose loading would run this module's code."""


def test_a_weights_file_with_pickled_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    path = embedding.weights_file("mobilenet_v2")
    path.parent.mkdir(parents=True)
    torch.save({"payload": _Payload()}, path)
    with pytest.raises(WeightsError, match="UnpicklingError"):
        load_network("mobilenet_v2")
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in __import__("os").environ  # switched back off


def test_random_networks_give_informative_embeddings():
    """Untrained networks in eval mode used to output ~1e-9 (MobileNetV2), stored as 0."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=generator)
    for name in ("mobilenet_v2", "inception_v3", "densenet121"):
        vectors = embed_images(images, name, network=load_network(name, "random"))
        spread = vectors.std(dim=0).mean() / vectors.abs().mean()
        assert vectors.abs().mean() > 1e-3 and spread > 0.01, name


class _Store:
    """Just what embed_epoch reads of a PrototypeStore: one layer, one repeat, given images."""

    def __init__(self, images):
        import pandas as pd

        self._images = images
        self._rows = pd.DataFrame({"epoch": 0, "layer": "layer1", "repeat": 1, "channel": range(len(images))})

    def select(self, epoch):
        return self._rows[self._rows.epoch == epoch]

    def images(self, rows):
        return self._images[torch.as_tensor(rows["channel"].to_numpy().copy())]


def _embed_pixels(images, mask):
    """embed_epoch in pixel space, on the CPU, of one layer's prototypes under one RF mask."""
    return embed_epoch(
        _Store(images), 0, "pixel", {"layer1": mask}, network=None, batch_size=8, device=torch.device("cpu")
    )


def test_a_degenerate_embedding_set_stops_with_its_name():
    identical = torch.full((3, 3, 8, 8), 77, dtype=torch.uint8)
    with pytest.raises(
        DegenerateError, match="pixel embeddings of epoch 0, layer1, repeat 1 \\(plain\\): all 3"
    ):
        _embed_pixels(identical, torch.ones(8, 8))
    varied = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(DegenerateError, match="RF mask used for epoch 0, layer1"):
        _embed_pixels(varied, torch.zeros(8, 8))
    vectors = _embed_pixels(varied, torch.ones(8, 8))
    plain = vectors["layer1"]["plain"]
    assert plain.dtype == torch.float16 and plain.shape == (1, 3, 192)  # (repeats, channels, 3 * 8 * 8)
    assert vectors["layer1"]["channels"].tolist() == [0, 1, 2] and vectors["layer1"]["repeats"].tolist() == [
        1
    ]


def test_unknown_network_and_weights_are_refused():
    with pytest.raises(ValueError, match="resnet50"):
        load_network("alexnet")
    with pytest.raises(ValueError, match="imagenet"):
        load_network("resnet50", weights="places365")


def test_params_schema_accepts_exactly_the_networks_we_have():
    from protoviz_core.pipeline.config import EmbedParams, ParamsError, parse_params

    assert EmbedParams().nets == list(NETWORKS)
    with pytest.raises(ParamsError, match="embed.nets"):
        parse_params({"embed": {"nets": ["alexnet"]}})


def test_random_weights_are_the_same_in_every_run():
    first, second = load_network("mobilenet_v2", "random"), load_network("mobilenet_v2", "random")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
