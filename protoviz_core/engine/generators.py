"""Image priors for prototype synthesis: latents (N, d) -> images (N, 3, S, S) in [0, 1].

Four generators behind one interface (:class:`Generator`):

- ``deepsim_fc6``: the DeePSiM "fc6" generator of Dosovitskiy & Brox (2016), the
  paper's natural-image prior (Sec. 2.1); weights from a file.
- ``fourier``: a weight-free Lucid-style parameterisation (Olah et al. 2017): a
  1/f-scaled Fourier spectrum per colour channel, decorrelated colours, sigmoid.
- ``maco``: MACO's phase-only parameterisation (Fel et al. 2023): the magnitude
  spectrum is fixed to that of the data set's own images (:func:`magnitude_spectrum`),
  only the phase is searched; no weights, readable images at every layer.
- ``decoder``: the decoder of a small variational autoencoder trained on the data set's
  own images (:class:`DecoderGenerator`; ``protoviz_core.prototypes.decoder_prior`` trains it): a
  learnt prior like DeePSiM's, with no downloaded weights, whose images look like the data.
- ``pixel``: raw pixels through a sigmoid, the baseline without a prior.

Latents are sampled per stream key (:mod:`protoviz_core.engine.rng`) so that a channel's
start does not depend on which channels share its batch.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from protoviz_core.engine.rng import keyed_normal
from protoviz_core.infra.errors import ProtovizError

DEEPSIM_WEIGHTS_SOURCE = (
    "upconvGAN_fc6.pt from the Hugging Face repository binxu/DeePSim_DosovitskiyBrox2016 "
    "(https://huggingface.co/binxu/DeePSim_DosovitskiyBrox2016)"
)
GENERATOR_NAMES = ("deepsim_fc6", "fourier", "maco", "decoder", "pixel")


class GeneratorWeightsError(ProtovizError, FileNotFoundError):
    """The DeePSiM weights file is missing, unreadable or holds other tensors; names it and its source."""


class Generator(nn.Module):
    """The interface: ``latent_dim``, ``forward(latents) -> images``, ``sample(keys, step)``."""

    latent_dim: int
    image_size: int

    def sample(self, keys: torch.Tensor, step: int = 0) -> torch.Tensor:
        """Starting latents (K, d), one per stream key: standard normal."""
        return keyed_normal(keys, step, (self.latent_dim,)).to(self._device())

    def _device(self) -> torch.device:
        buffer = next(iter(self.buffers()), None)
        parameter = next(iter(self.parameters()), None)
        tensor = buffer if buffer is not None else parameter
        return tensor.device if tensor is not None else torch.device("cpu")


class PixelGenerator(Generator):
    """Each latent is the image's pixels before a sigmoid: d = 3 * S * S."""

    def __init__(self, image_size: int):
        super().__init__()
        self.image_size = image_size
        self.latent_dim = 3 * image_size * image_size

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(latents.view(-1, 3, self.image_size, self.image_size))


# Square root of the colour correlation of natural images (Lucid's
# color_correlation_svd_sqrt), normalised so its largest column has norm 1.
_COLOUR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOUR_SQRT = _COLOUR_SQRT / _COLOUR_SQRT.norm(dim=0).max()


class FourierGenerator(Generator):
    """Decorrelated-colour, 1/f-scaled Fourier image (Lucid's ``fft_image``), no weights.

    The latent holds the real and imaginary parts of the spectrum of three
    decorrelated colour channels, d = 3 * S * (S // 2 + 1) * 2. Each frequency f is
    scaled by 1 / f**decay_power (natural images' spectrum), normalised so that a
    standard-normal latent gives unit-variance pixels before the colour transform.
    """

    def __init__(self, image_size: int, decay_power: float = 1.0):
        super().__init__()
        self.image_size = image_size
        fy = torch.fft.fftfreq(image_size)[:, None]
        fx = torch.fft.rfftfreq(image_size)[None, :]
        frequency = torch.sqrt(fx**2 + fy**2).clamp(min=1.0 / image_size)  # (S, S//2+1)
        scale = frequency**-decay_power
        self.register_buffer("scale", scale / scale.pow(2).mean().sqrt(), persistent=False)
        self.register_buffer("colour", _COLOUR_SQRT.clone(), persistent=False)
        self.spectrum_shape = (3, image_size, image_size // 2 + 1, 2)
        self.latent_dim = math.prod(self.spectrum_shape)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        spectrum = torch.view_as_complex(latents.float().reshape(-1, *self.spectrum_shape).contiguous())
        decorrelated = torch.fft.irfft2(spectrum * self.scale, s=(s, s), norm="ortho")  # (N, 3, S, S)
        rgb = torch.einsum("ij,njhw->nihw", self.colour, decorrelated)
        return torch.sigmoid(rgb)


LOGIT_CLAMP = 0.02  # pixels are clamped to [0.02, 0.98] before the logit: 0 and 1 have none


def magnitude_spectrum(images: torch.Tensor) -> torch.Tensor:
    """The mean Fourier magnitude of natural images, in :class:`MacoGenerator`'s space.

    Pixels go to logit space (the generator ends with a sigmoid), their colours are
    decorrelated (the inverse of the generator's colour transform), and the magnitudes of
    the 2-D real FFT (orthonormal) are averaged over the images. The frequency-0 term is
    the mean colour of the data set (with its sign, which the generator keeps), so an image
    made with any phase has the data's mean colour and its contrast at every frequency.
    Xplique's ``init_maco_buffer`` measures the magnitude from a data set the same way.

    Args:
        images: (N, 3, S, S) uint8 or float in [0, 1].

    Returns:
        float32 (3, S, S // 2 + 1).
    """
    pixels = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    logits = torch.logit(pixels.clamp(LOGIT_CLAMP, 1 - LOGIT_CLAMP))
    decorrelated = torch.einsum("ij,njhw->nihw", torch.linalg.inv(_COLOUR_SQRT), logits)
    spectrum = torch.fft.rfft2(decorrelated, norm="ortho")
    magnitude = spectrum.abs().mean(dim=0)
    magnitude[:, 0, 0] = spectrum[:, :, 0, 0].real.mean(dim=0)  # signed: the mean colour
    return magnitude


class MagnitudeSpectrumError(ProtovizError, FileNotFoundError):
    """The magnitude spectrum file is missing, unreadable or of another image size; names it and the fix."""


def load_magnitude(path: str | Path, image_size: int) -> torch.Tensor:
    """The (3, S, S // 2 + 1) magnitude spectrum saved by the spectrum stage (``{"magnitude": tensor}``).

    Raises:
        MagnitudeSpectrumError: missing, not a weights-only torch file, or of another image size.
    """
    path = Path(path).expanduser()
    fix = "run dvc repro spectrum (it measures the spectrum from the training images)"
    if not path.is_file():
        raise MagnitudeSpectrumError(f"{path}: magnitude spectrum not found; {fix}")
    try:
        magnitude = torch.load(path, map_location="cpu", weights_only=True)["magnitude"]
    except Exception as exc:  # truncated file, pickled code, another dict: torch raises many types
        raise MagnitudeSpectrumError(
            f"{path}: not a magnitude spectrum file ({type(exc).__name__}); {fix}"
        ) from None
    expected = (3, image_size, image_size // 2 + 1)
    if not isinstance(magnitude, torch.Tensor) or tuple(magnitude.shape) != expected:
        shape = tuple(magnitude.shape) if isinstance(magnitude, torch.Tensor) else type(magnitude).__name__
        raise MagnitudeSpectrumError(
            f"{path}: spectrum of shape {shape}, expected {expected} for {image_size} px; {fix}"
        )
    if not bool(torch.isfinite(magnitude).all()) or float(magnitude.max()) <= 0:
        raise MagnitudeSpectrumError(f"{path}: spectrum is all zero or not finite; {fix}")
    return magnitude.float()


class MacoGenerator(Generator):
    """MACO (Fel et al. 2023): only the Fourier phase is searched; the magnitude is the data's.

    The latent is the phase of each frequency of three decorrelated colour channels,
    d = 3 * S * (S // 2 + 1). image = sigmoid(colour @ irfft2(r * exp(i phase))), with r
    the data set's mean magnitude in logit space (:func:`magnitude_spectrum`): every image
    has the data's mean colour and its power at every frequency, so the search can move
    edges and blobs but cannot pump up the high-frequency energy that adversarial
    patterns are made of. The phase of frequency 0 is ignored (the mean colour is fixed).
    (MACO itself standardises the image instead; with the data's own magnitudes, its
    contrast is already the data's.)
    """

    def __init__(self, magnitude: torch.Tensor):
        super().__init__()
        if (
            magnitude.ndim != 3
            or magnitude.shape[0] != 3
            or magnitude.shape[2] != magnitude.shape[1] // 2 + 1
        ):
            raise ValueError(f"magnitude must be (3, S, S // 2 + 1), got {tuple(magnitude.shape)}")
        self.image_size = magnitude.shape[1]
        self.register_buffer("magnitude", magnitude.float().clone(), persistent=False)
        self.register_buffer("colour", _COLOUR_SQRT.clone(), persistent=False)
        keep = torch.ones_like(self.magnitude)
        keep[:, 0, 0] = 0
        self.register_buffer("free", keep, persistent=False)  # 0 where the phase is fixed (the mean)
        self.latent_dim = magnitude.numel()

    def sample(self, keys: torch.Tensor, step: int = 0) -> torch.Tensor:
        """Starting phases (K, d): normal with standard deviation pi, close to uniform on the circle.

        (Phases near 0 would line every frequency's peak up at pixel (0, 0): a bright corner.)
        """
        return super().sample(keys, step) * math.pi

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        phase = latents.float().reshape(-1, *self.magnitude.shape) * self.free
        spectrum = torch.polar(self.magnitude.expand_as(phase), phase)
        decorrelated = torch.fft.irfft2(spectrum, s=(s, s), norm="ortho")  # (N, 3, S, S) logits
        return torch.sigmoid(torch.einsum("ij,njhw->nihw", self.colour, decorrelated))


# The decoder stage's file: {"format", "latent_dim", "width", "image_size", "decoder"}.
DECODER_FORMAT = "protoviz-decoder-1"


class DecoderWeightsError(ProtovizError, FileNotFoundError):
    """The decoder prior's file is missing, unreadable, of another size or format; names it and the fix."""


class DecoderGenerator(Generator):
    """A VAE's decoder as the prior: latent (N, d) -> images (N, 3, S, S) in [0, 1].

    A linear layer to a (8w, s, s) map, s = ceil(S / 16), then four transposed convolutions
    that each double the side (BatchNorm and LeakyReLU between them; eval mode in the
    search, so every image is made on its own and a channel's prototype does not depend on
    its batch), and a sigmoid; a side 16 s other than S (24 px, say) is resized to S. Trained
    as a VAE, its latent prior is the standard normal that :meth:`Generator.sample` draws
    starts from.

    Args:
        latent_dim: d.
        width: w, the channels of the last hidden map (8w, 4w, 2w, w from the first).
        image_size: S.
    """

    def __init__(self, latent_dim: int, width: int, image_size: int):
        super().__init__()
        self.latent_dim, self.width, self.image_size = latent_dim, width, image_size
        self.start = math.ceil(image_size / 16)
        self.side = 16 * self.start  # the network's own output side
        self.project = nn.Linear(latent_dim, 8 * width * self.start**2)

        def up(cin: int, cout: int) -> nn.Module:
            return nn.Sequential(
                nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1),
                nn.BatchNorm2d(cout),
                nn.LeakyReLU(0.2),
            )

        self.body = nn.Sequential(
            up(8 * width, 4 * width),
            up(4 * width, 2 * width),
            up(2 * width, width),
            nn.ConvTranspose2d(width, 3, kernel_size=4, stride=2, padding=1),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        hidden = self.project(latents.float()).view(-1, 8 * self.width, self.start, self.start)
        images = torch.sigmoid(self.body(hidden))
        if self.side != self.image_size:
            images = F.interpolate(images, size=(self.image_size,) * 2, mode="bilinear", antialias=True)
        return images

    @classmethod
    def from_file(cls, path: str | Path, image_size: int) -> DecoderGenerator:
        """The decoder stage's file (weights only, no pickled code is run), in eval mode.

        Raises:
            DecoderWeightsError: missing, not a weights-only torch file, another format, or
                trained for another image size.
        """
        path = Path(path).expanduser()
        fix = "run dvc repro decoder (it trains the prior on the training images)"
        if not path.is_file():
            raise DecoderWeightsError(f"{path}: decoder prior not found; {fix}")
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated file, pickled code, not a torch file: torch raises many types
            raise DecoderWeightsError(
                f"{path}: not a decoder prior file ({type(exc).__name__}); {fix}"
            ) from None
        if not isinstance(saved, dict) or saved.get("format") != DECODER_FORMAT:
            raise DecoderWeightsError(f"{path}: not a {DECODER_FORMAT} file; {fix}")
        if "unused" in saved:
            raise DecoderWeightsError(
                f"{path}: no decoder was trained (extract.generator was {saved['unused']} when the "
                f"decoder stage ran); {fix}"
            )
        if saved["image_size"] != image_size:
            raise DecoderWeightsError(
                f"{path}: a decoder for {saved['image_size']} px images, the run's are {image_size} px; {fix}"
            )
        generator = cls(int(saved["latent_dim"]), int(saved["width"]), image_size)
        try:
            generator.load_state_dict(saved["decoder"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise DecoderWeightsError(f"{path}: its tensors do not fit the decoder ({exc}); {fix}") from None
        return generator.eval()

    def file_contents(self) -> dict:
        """What :meth:`from_file` reads: the architecture and the weights, tensors only."""
        return {
            "format": DECODER_FORMAT,
            "latent_dim": self.latent_dim,
            "width": self.width,
            "image_size": self.image_size,
            "decoder": self.state_dict(),
        }


def _deepsim_fc6_layers() -> nn.Sequential:
    """DeePSiM fc6 (Dosovitskiy & Brox 2016): 4096 -> BGR (3, 256, 256), mean-subtracted 0-255.

    Layer names and types follow the public PyTorch port so its state dict loads
    as is; the 3x3 stride-1 layers are transposed convolutions there (same shapes
    as convolutions, transposed weight layout).
    """

    def leaky() -> nn.Module:
        return nn.LeakyReLU(negative_slope=0.3, inplace=True)

    def up(cin: int, cout: int) -> nn.Module:  # doubles the resolution
        return nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1)

    def same(cin: int, cout: int) -> nn.Module:
        return nn.ConvTranspose2d(cin, cout, kernel_size=3, stride=1, padding=1)

    return nn.Sequential(
        OrderedDict(
            [
                ("defc7", nn.Linear(4096, 4096)),
                ("relu_defc7", leaky()),
                ("defc6", nn.Linear(4096, 4096)),
                ("relu_defc6", leaky()),
                ("defc5", nn.Linear(4096, 4096)),
                ("relu_defc5", leaky()),
                ("reshape", nn.Unflatten(1, (256, 4, 4))),
                ("deconv5", up(256, 256)),
                ("relu_deconv5", leaky()),  # 8 x 8
                ("conv5_1", same(256, 512)),
                ("relu_conv5_1", leaky()),
                ("deconv4", up(512, 256)),
                ("relu_deconv4", leaky()),  # 16
                ("conv4_1", same(256, 256)),
                ("relu_conv4_1", leaky()),
                ("deconv3", up(256, 128)),
                ("relu_deconv3", leaky()),  # 32
                ("conv3_1", same(128, 128)),
                ("relu_conv3_1", leaky()),
                ("deconv2", up(128, 64)),
                ("relu_deconv2", leaky()),  # 64
                ("deconv1", up(64, 32)),
                ("relu_deconv1", leaky()),  # 128
                ("deconv0", up(32, 3)),  # 256, no activation
            ]
        )
    )


class DeePSiMGenerator(Generator):
    """The paper's prior: DeePSiM fc6, output resized to ``image_size``.

    Raw output is BGR, mean-subtracted, 0-255; it is flipped to RGB, the ImageNet
    mean (123, 117, 104) added back, clamped to 0..255 and divided by 255. The 256 px
    output is resized bilinearly, antialiased by default; ``antialias=False`` is the
    authors' code (torchvision ``Resize`` on tensors from before antialiasing was its default).
    """

    def __init__(self, image_size: int, antialias: bool = True):
        super().__init__()
        self.image_size = image_size
        self.antialias = antialias
        self.latent_dim = 4096
        self.G = _deepsim_fc6_layers()
        self.register_buffer(
            "rgb_mean", torch.tensor([123.0, 117.0, 104.0]).view(1, 3, 1, 1), persistent=False
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        bgr = self.G(latents)  # (N, 3, 256, 256)
        rgb = (bgr.flip(1) + self.rgb_mean).clamp(0, 255) / 255
        if rgb.shape[-1] != self.image_size:
            rgb = F.interpolate(
                rgb,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                antialias=self.antialias,
                align_corners=False,
            )
        return rgb.clamp(0, 1)

    @classmethod
    def random(cls, image_size: int, antialias: bool = True) -> DeePSiMGenerator:
        """Untrained weights scaled so images vary (tests and timing only; seed with torch)."""
        generator = cls(image_size, antialias)
        for module in generator.G:
            if isinstance(module, (nn.Linear, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, a=0.3, nonlinearity="leaky_relu")
                nn.init.zeros_(module.bias)
        with torch.no_grad():  # calibrate: raw output std 60 on the 0-255 scale, like real images
            std = generator.G(torch.randn(4, 4096)).std()
            generator.G.deconv0.weight.mul_(60.0 / std)
        return generator

    @classmethod
    def from_file(cls, path: str | Path, image_size: int, antialias: bool = True) -> DeePSiMGenerator:
        """Load the public fc6 weights (no pickled code is run).

        Raises:
            GeneratorWeightsError: ``path`` is missing, not a weights-only torch file, or
                holds other tensors than DeePSiM fc6's; says where the weights come from.
        """
        path = Path(path).expanduser()
        if not path.is_file():
            raise GeneratorWeightsError(
                f"{path}: DeePSiM weights not found; download {DEEPSIM_WEIGHTS_SOURCE}"
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, pickled code, not a torch file: torch raises many types
            raise GeneratorWeightsError(
                f"{path}: not readable as weights-only torch tensors ({type(exc).__name__}); "
                f"download {DEEPSIM_WEIGHTS_SOURCE} again"
            ) from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise GeneratorWeightsError(
                f"{path}: holds no state dict of tensors; download {DEEPSIM_WEIGHTS_SOURCE}"
            )
        # The public files name keys "defc7.weight" or "G.defc7.weight", some with a stray ".1.".
        state = {k.removeprefix("G.").replace(".1.", "."): v for k, v in state.items()}
        generator = cls(image_size, antialias)
        expected = generator.G.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
        if missing or unexpected or wrong:
            raise GeneratorWeightsError(
                f"{path}: not DeePSiM fc6 weights (missing {missing[:3]}, unexpected {unexpected[:3]}, "
                f"wrong shape {wrong[:3]}); download {DEEPSIM_WEIGHTS_SOURCE}"
            )
        generator.G.load_state_dict(state)
        return generator


def make_generator(
    name: str | Generator, image_size: int, weights: str | Path | None = None, antialias: bool = True
) -> Generator:
    """A generator by name, or ``name`` itself when it already is one.

    Args:
        name: ``deepsim_fc6``, ``fourier``, ``maco``, ``decoder`` or ``pixel``.
        image_size: side S of the images it makes.
        weights: ``deepsim_fc6``: the weights file, or ``"random"`` for an untrained
            network (tests and timing only); ``maco``: the magnitude spectrum file
            (:func:`load_magnitude`); ``decoder``: the decoder stage's file.
        antialias: ``deepsim_fc6`` only: antialias its 256 px -> S resize (False: the authors' code).
    """
    if isinstance(name, Generator):
        return name
    if name == "pixel":
        return PixelGenerator(image_size)
    if name == "fourier":
        return FourierGenerator(image_size)
    if name == "maco":
        if weights is None:
            raise MagnitudeSpectrumError(
                "extract.generator_weights: maco needs the magnitude spectrum file (out/spectrum.pt, "
                "made by dvc repro spectrum)"
            )
        return MacoGenerator(load_magnitude(weights, image_size))
    if name == "decoder":
        if weights is None:
            raise DecoderWeightsError(
                "extract.generator_weights: decoder needs the trained prior, out/decoder.pt "
                "(made by dvc repro decoder)"
            )
        return DecoderGenerator.from_file(weights, image_size)
    if name == "deepsim_fc6":
        if weights is None:
            raise GeneratorWeightsError(
                f"extract.generator_weights: deepsim_fc6 needs its weights file; "
                f"download {DEEPSIM_WEIGHTS_SOURCE}"
            )
        if str(weights) == "random":
            return DeePSiMGenerator.random(image_size, antialias)
        return DeePSiMGenerator.from_file(weights, image_size, antialias)
    raise ValueError(f"unknown generator {name!r}; choose one of {GENERATOR_NAMES}")
