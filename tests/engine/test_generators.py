import pytest
import torch

from protoviz_core.engine.generators import (
    DEEPSIM_WEIGHTS_SOURCE,
    DecoderGenerator,
    DecoderWeightsError,
    DeePSiMGenerator,
    FourierGenerator,
    GeneratorWeightsError,
    MacoGenerator,
    MagnitudeSpectrumError,
    load_magnitude,
    magnitude_spectrum,
    make_generator,
)
from protoviz_core.engine.rng import stream_keys


@pytest.mark.parametrize("name, dim", [("pixel", 3 * 20 * 20), ("fourier", 3 * 20 * 11 * 2)])
def test_weight_free_generators_make_images_with_gradients(name, dim):
    generator = make_generator(name, 20)
    latents = generator.sample(stream_keys(0, torch.arange(4))).requires_grad_(True)
    assert latents.shape == (4, dim) == (4, generator.latent_dim)
    images = generator(latents)
    assert images.shape == (4, 3, 20, 20) and 0 <= images.min() and images.max() <= 1
    images.mean().backward()
    assert latents.grad.abs().sum() > 0


def test_fourier_images_are_neither_flat_nor_saturated_and_mostly_low_frequency():
    generator = FourierGenerator(32)
    images = generator(generator.sample(stream_keys(1, torch.arange(16))))
    assert 0.05 < images.std() < 0.35
    assert ((images < 0.01) | (images > 0.99)).float().mean() < 0.05
    # 1/f spectrum: neighbouring pixels are correlated, unlike white noise.
    grey = images.mean(1)
    neighbours = torch.corrcoef(torch.stack([grey[:, :, :-1].flatten(), grey[:, :, 1:].flatten()]))[0, 1]
    assert neighbours > 0.5


def test_deepsim_architecture_with_random_weights():
    torch.manual_seed(0)
    generator = make_generator("deepsim_fc6", 40, weights="random")
    latents = generator.sample(stream_keys(0, torch.arange(2)))
    assert latents.shape == (2, 4096)
    raw = generator.G(latents)
    assert raw.shape == (2, 3, 256, 256)  # BGR at 256 px before resizing
    images = generator(latents)
    assert images.shape == (2, 3, 40, 40) and 0 <= images.min() and images.max() <= 1
    # BGR -> RGB plus the mean, clamped, /255 (checked at full size):
    full = DeePSiMGenerator(256)
    full.load_state_dict(generator.state_dict())
    expected = (raw.flip(1) + torch.tensor([123.0, 117.0, 104.0]).view(1, 3, 1, 1)).clamp(0, 255) / 255
    torch.testing.assert_close(full(latents), expected)


def test_deepsim_loads_the_public_key_layouts(tmp_path):
    source = DeePSiMGenerator(32)
    state = source.G.state_dict()
    path = tmp_path / "upconvGAN_fc6.pt"
    torch.save({f"G.{k}": v for k, v in state.items()}, path)
    loaded = make_generator("deepsim_fc6", 32, weights=path)
    latents = torch.randn(1, 4096)
    torch.testing.assert_close(loaded(latents), source(latents))


def test_deepsim_weight_errors_say_where_weights_come_from(tmp_path):
    with pytest.raises(
        GeneratorWeightsError, match="absent.pt: DeePSiM weights not found.*huggingface.co/binxu"
    ):
        make_generator("deepsim_fc6", 32, weights=tmp_path / "absent.pt")
    with pytest.raises(GeneratorWeightsError, match="extract.generator_weights: .* download"):
        make_generator("deepsim_fc6", 32)
    wrong = tmp_path / "other.pt"
    torch.save({"defc7.weight": torch.zeros(10, 10)}, wrong)
    with pytest.raises(GeneratorWeightsError) as caught:
        make_generator("deepsim_fc6", 32, weights=wrong)
    assert "other.pt: not DeePSiM fc6 weights" in str(caught.value)
    assert DEEPSIM_WEIGHTS_SOURCE in str(caught.value)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04 not a torch file at all")
    pickled_code = tmp_path / "pickled.pt"
    torch.save({"defc7.weight": torch.zeros(1), "hook": print}, pickled_code)  # weights_only refuses code
    for path in (garbage, pickled_code):
        with pytest.raises(
            GeneratorWeightsError, match=rf"{path.name}: not readable as weights-only torch tensors"
        ):
            make_generator("deepsim_fc6", 32, weights=path)


def test_unknown_generator_lists_the_choices():
    with pytest.raises(ValueError, match="deepsim_fc6.*fourier.*pixel"):
        make_generator("biggan", 32)


def test_deepsim_legacy_resize_is_the_authors_bilinear_without_antialiasing():
    torch.manual_seed(0)
    smooth = make_generator("deepsim_fc6", 96, "random")
    legacy = make_generator("deepsim_fc6", 96, "random", antialias=False)
    legacy.load_state_dict(smooth.state_dict())
    codes = torch.randn(2, 4096)
    with torch.no_grad():
        full = (smooth.G(codes).flip(1) + smooth.rgb_mean).clamp(0, 255) / 255  # (2, 3, 256, 256)
        expected = torch.nn.functional.interpolate(
            full, size=(96, 96), mode="bilinear", antialias=False, align_corners=False
        ).clamp(0, 1)
        torch.testing.assert_close(legacy(codes), expected)
        assert (legacy(codes) - smooth(codes)).abs().max() > 0.05  # the two resizes differ visibly


def _bars(count: int, size: int = 20) -> torch.Tensor:
    """uint8 (count, 3, S, S): yellow vertical bars on dark blue, shifted per image (a texture)."""
    images = torch.zeros(count, 3, size, size)
    images[:, 2] = 0.4
    for i in range(count):
        images[i, :2, :, (i % 4) :: 4] = 0.9
    return (images * 255).round().to(torch.uint8)


def test_maco_images_have_the_data_sets_mean_colour_and_spectrum_whatever_the_phase():
    data = _bars(16)
    magnitude = magnitude_spectrum(data)
    assert magnitude.shape == (3, 20, 11)
    generator = MacoGenerator(magnitude)
    phases = generator.sample(stream_keys(0, torch.arange(8))).requires_grad_(True)
    images = generator(phases)
    assert images.shape == (8, 3, 20, 20) and 0 <= images.min() and images.max() <= 1
    images.mean().backward()
    assert phases.grad.abs().sum() > 0
    # The data's blue background and yellow bars: its mean colour, with its contrast, not grey.
    data_mean = (data.float() / 255).mean(dim=(0, 2, 3))
    assert torch.allclose(images.mean(dim=(0, 2, 3)), data_mean, atol=0.12)
    assert images.std() > 0.15
    # Every image, whatever its phase, has the data's magnitude at every frequency (the columns
    # of the half spectrum that need no Hermitian symmetry: not 0, not the Nyquist one).
    logits = torch.logit(images.detach().double())
    decorrelated = torch.einsum("ij,njhw->nihw", torch.linalg.inv(generator.colour.double()), logits)
    per_image = torch.fft.rfft2(decorrelated, norm="ortho").abs()  # (8, 3, 20, 11)
    assert torch.allclose(
        per_image[..., 1:10], magnitude.double()[None, ..., 1:10].expand_as(per_image[..., 1:10]), atol=1e-3
    )
    # The phase is what the search moves: two phases, two images.
    assert (images[0] - images[1]).abs().mean() > 0.05


def test_maco_spectrum_file_errors_name_the_file_and_the_stage(tmp_path):
    with pytest.raises(MagnitudeSpectrumError, match="not found; run dvc repro spectrum"):
        load_magnitude(tmp_path / "none.pt", 20)
    path = tmp_path / "spectrum.pt"
    torch.save({"magnitude": torch.ones(3, 24, 13)}, path)
    with pytest.raises(MagnitudeSpectrumError, match=r"expected \(3, 20, 11\) for 20 px"):
        load_magnitude(path, 20)
    torch.save({"magnitude": torch.zeros(3, 20, 11)}, path)
    with pytest.raises(MagnitudeSpectrumError, match="all zero"):
        load_magnitude(path, 20)
    path.write_bytes(b"not a torch file")
    with pytest.raises(MagnitudeSpectrumError, match="not a magnitude spectrum file"):
        load_magnitude(path, 20)
    with pytest.raises(MagnitudeSpectrumError, match="maco needs the magnitude spectrum"):
        make_generator("maco", 20)
    torch.save({"magnitude": magnitude_spectrum(_bars(4))}, path)
    assert make_generator("maco", 20, path).latent_dim == 3 * 20 * 11


def test_the_decoder_prior_makes_images_per_latent_whatever_its_batch_and_round_trips_its_file(tmp_path):
    """Eval mode: a latent's image does not depend on the others in its batch (BatchNorm uses its
    running statistics), so a channel's prototype does not depend on its batch."""
    torch.manual_seed(0)
    decoder = DecoderGenerator(latent_dim=8, width=4, image_size=32).eval()
    latents = decoder.sample(stream_keys(0, torch.arange(5))).requires_grad_(True)
    images = decoder(latents)
    assert images.shape == (5, 3, 32, 32) and 0 <= images.min() and images.max() <= 1
    assert torch.allclose(decoder(latents[2:3]), images[2:3], atol=1e-6)
    images.mean().backward()
    assert latents.grad.abs().sum() > 0
    path = tmp_path / "decoder.pt"
    torch.save(decoder.file_contents(), path)
    loaded = make_generator("decoder", 32, path)
    assert isinstance(loaded, DecoderGenerator) and not loaded.training
    assert torch.equal(loaded(latents.detach()), decoder(latents.detach()))


def test_decoder_prior_file_errors_name_the_file_and_the_stage(tmp_path):
    path = tmp_path / "decoder.pt"
    with pytest.raises(DecoderWeightsError, match="decoder prior not found; run dvc repro decoder"):
        make_generator("decoder", 32, path)
    with pytest.raises(DecoderWeightsError, match="decoder needs the trained prior"):
        make_generator("decoder", 32)
    torch.save(DecoderGenerator(8, 4, 32).file_contents(), path)
    with pytest.raises(DecoderWeightsError, match="a decoder for 32 px images, the run's are 48 px"):
        make_generator("decoder", 48, path)
    torch.save({"format": "protoviz-decoder-1", "unused": "maco"}, path)
    with pytest.raises(DecoderWeightsError, match="no decoder was trained .extract.generator was maco"):
        make_generator("decoder", 32, path)
    torch.save({"magnitude": torch.ones(3)}, path)
    with pytest.raises(DecoderWeightsError, match="not a protoviz-decoder-1 file"):
        make_generator("decoder", 32, path)
    contents = DecoderGenerator(8, 4, 32).file_contents()
    contents["width"] = 5
    torch.save(contents, path)
    with pytest.raises(DecoderWeightsError, match="do not fit the decoder"):
        make_generator("decoder", 32, path)
    assert DecoderGenerator(8, 4, 24)(torch.zeros(2, 8)).shape == (2, 3, 24, 24)  # made at 32, resized
