"""The one typed schema for params.yaml.

Every stage calls :func:`load_params` before doing any work. A bad value stops the
stage with a single :class:`ParamsError` that names the key, what was given and
what is allowed. The rest of ``protoviz_core`` never reads params.yaml: it takes the
validated dataclasses (pydantic models) or plain typed arguments.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from protoviz_core.infra.errors import ProtovizError
from protoviz_core.infra.hashing import short_hash
from protoviz_core.models.backbones import (
    BACKBONE_ARCH,
    FEATURE_DIMS,
    backbone_layer_names,
    backbone_layer_widths,
)
from protoviz_core.models.learners import LEARNERS, PAPER_METHOD, training_split
from protoviz_core.models.networks import NETWORKS

Augmentation = Literal["clrjit", "keepclr"]
# The registered learners (protoviz_core/models/learners.py); simclr is the paper's.
METHODS: tuple[str, ...] = tuple(LEARNERS)
Method = Literal[METHODS]
# The backbones (protoviz_core/models/backbones.py); resnet18 is the paper's.
BACKBONES: tuple[str, ...] = tuple(FEATURE_DIMS)
Backbone = Literal[BACKBONES]
TRAINING_VERSION = 1
"""The version of what turns a configuration into checkpoints: the training loop, the learners
(their heads and losses) and their augmentations. Bump it with any change of their behaviour
(not of their wording), so that checkpoints of the old behaviour are retrained instead of resumed;
tests/training/test_loop.py's golden run fails until it is bumped."""

# Keys added after results existed, at the value that reproduces those results: left out of
# the identities while they hold it, so that adding them retrains and redoes nothing.
_IDENTITY_DEFAULTS = {
    ("train", "method"): PAPER_METHOD,
    ("train", "backbone"): BACKBONE_ARCH,
    ("similarity", "images"): 250,
    ("similarity", "seed"): 0,
    ("decoder", "latent_dim"): 32,
    ("decoder", "width"): 16,
    ("decoder", "epochs"): 20,
    ("decoder", "beta"): 0.1,
    ("decoder", "batch_size"): 64,
    ("decoder", "lr"): 0.002,
    ("decoder", "seed"): 0,
}
# Keys that change how a run is kept or how fast, never what it computes: left out of the identities.
_NOT_IDENTITY = {
    ("train", "state_every"),
    ("similarity", "batch_size"),
    ("similarity", "device"),
    ("decoder", "device"),
}


def _check_device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise ValueError(f"{value!r} is not a device; use auto, cpu, cuda, or cuda:N for GPU N")
    return value


# auto: a GPU no other protoviz process holds, else the CPU; cuda: the same, but a GPU is required;
# cuda:N: GPU N as given (see protoviz_core.infra.devices).
Device = Annotated[str, AfterValidator(_check_device)]


class _Section(BaseModel):
    # extra="forbid": a misspelt key is an error, never silently ignored.
    # allow_inf_nan=False: `.inf` or `.nan` (YAML floats) would train on NaN; refuse them here.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SyntheticParams(_Section):
    """Sizes of the offline STL10-format set (the real STL10 has 100k / 5k / 8k)."""

    n_unlabeled: int = Field(2000, ge=1)  # images for self-supervised training
    n_train: int = Field(500, ge=10)  # labelled images for fitting linear probes
    n_test: int = Field(500, ge=10)  # labelled images for scoring linear probes
    seed: int = Field(0, ge=0)  # the data set is a pure function of this seed


class DataParams(_Section):
    name: Literal["synthetic", "stl10"] = "synthetic"
    # stl10: folder that holds (or will receive, by download) stl10_binary/.
    root: str | None = None
    # Side of the square images in pixels. STL10 is 96; the demo uses less.
    image_size: int = Field(96, ge=16, le=512)
    synthetic: SyntheticParams = SyntheticParams()

    @model_validator(mode="after")
    def _stl10_needs_root_and_96px(self) -> DataParams:
        if self.name == "stl10" and not self.root:
            raise ValueError(
                "data.root: required with data.name: stl10; the folder that holds "
                "stl10_binary/ (or receives it by download), e.g. ~/datasets/stl10"
            )
        if self.name == "stl10" and self.image_size != 96:
            raise ValueError(
                f"data.image_size: STL10 images are 96 px, got {self.image_size}; "
                "set data.image_size: 96 or use data.name: synthetic"
            )
        return self


class TrainParams(_Section):
    """Training (paper Sec. 6.1); defaults are the paper's values."""

    method: Method = PAPER_METHOD  # the learner; the paper: simclr (others: this project's, learners.py)
    backbone: Backbone = (
        BACKBONE_ARCH  # the paper: resnet18; resnet34, resnet50, mobilenet_v2: this project's
    )

    epochs: int = Field(100, ge=0)  # E epochs -> E+1 checkpoints (epoch 0 = init)
    batch_size: int = Field(
        256, ge=2
    )  # images per step (the learner makes its views of each: two, DINO eight, supervision one)
    lr: float = Field(0.06, gt=0)  # SGD learning rate, cosine-annealed to 0
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    temperature: float = Field(0.5, gt=0)  # NT-Xent temperature (lightly's default)
    min_scale: float = Field(0.08, gt=0, le=1)  # RandomResizedCrop lower bound
    cj_strength: float = Field(1.0, ge=0)  # colour-jitter strength (clrjit only)
    gaussian_blur: float = Field(0.5, ge=0, le=1)  # blur probability
    num_workers: int = Field(2, ge=0)  # DataLoader worker processes
    # Keep the resume state after every k-th epoch (0: never), so that a lost checkpoint costs
    # a replay of at most k + 1 epochs. Shapes no weights: not part of the run's identity.
    state_every: int = Field(10, ge=0)
    device: Device = "auto"  # auto: a free GPU when there is one, else the CPU; cuda:N: that GPU


class ProbeParams(_Section):
    """Linear probes on frozen features (paper Sec. 6.1, Fig. 4)."""

    every: int = Field(1, ge=1)  # probe every k-th checkpoint (first and last always)
    batch_size: int = Field(256, ge=1)  # images per forward pass when extracting features
    device: Device = "auto"
    logreg_c: float = Field(1.0, gt=0)  # inverse L2 strength of LogisticRegression
    logreg_max_iter: int = Field(1000, ge=1)
    # newton-cg reaches the same (strictly convex) optimum as sklearn's default lbfgs in a few
    # Newton steps, faster on these few-feature problems (bench/choices/probe_solver.py)
    logreg_solver: Literal["newton-cg", "lbfgs"] = "newton-cg"
    svc_c: float = Field(0.1, gt=0)  # LinearSVC's C (squared hinge loss)
    svc_max_iter: int = Field(5000, ge=1)
    adam_epochs: int = Field(100, ge=1)  # passes of the Adam readout over the train features
    adam_lr: float = Field(1e-3, gt=0)
    adam_weight_decay: float = Field(1e-4, ge=0)
    adam_batch_size: int = Field(256, ge=1)


DEFAULT_LAYERS = ("layer1", "layer2", "layer3", "layer4")


def _check_layers(layers: list[str]) -> list[str]:
    if not layers:
        raise ValueError("needs at least one layer")
    return layers


def _unknown_layer(key: str, layers: list[str], arch: str) -> str | None:
    """A one-line complaint about the first of ``layers`` that backbone ``arch`` lacks, or None."""
    valid = backbone_layer_names(arch)
    unknown = [layer for layer in layers if layer not in valid]
    if not unknown:
        return None
    examples = ", ".join(valid[:12])
    return f"{key}: unknown layer {unknown[0]!r}; {arch} (train.backbone) layers are e.g. {examples}, ..."


class RFMaskParams(_Section):
    """Gradient receptive fields and Gaussian masks (paper Sec. 6.3)."""

    every: int = Field(1, ge=1)  # every k-th checkpoint (first and last always)
    layers: list[str] = list(DEFAULT_LAYERS)  # dotted module names of the backbone
    samples: int = Field(200, ge=1)  # uniform-noise images averaged over
    channels_per_layer: int | None = Field(None, ge=1)  # evenly spaced subset; null = all
    max_batch: int = Field(256, ge=1)  # (channel, sample) images per forward/backward
    device: Device = "auto"
    seed: int = Field(0, ge=0)  # noise images

    _layers_exist = field_validator("layers")(_check_layers)


class ExtractParams(_Section):
    """Prototype synthesis for every checkpoint, layer, channel and repeat (Sec. 2.2, 6.2)."""

    epochs: Literal["all"] | int | list[int] = "all"  # all, a stride k, or a list
    layers: list[str] = list(DEFAULT_LAYERS)
    # evenly spaced subset (diversity needs two); null = all
    channels_per_layer: int | None = Field(None, ge=2)
    repeats: int = Field(2, ge=1)  # independent evolutions per channel (distinct seeds)
    seed: int = Field(0, ge=0)  # with the run's seed, epoch, layer and repeat it seeds each shard
    # false: every epoch draws independent noise (like the repeats); true: all epochs of a
    # (layer, channel, repeat) share theirs (common random numbers; lowers rate of change's noise floor)
    # starts: the same start codes at every epoch, independent search noise (the authors' code)
    common_streams: bool | Literal["starts"] = False
    # the paper: deepsim_fc6; maco: phase-only with the data's magnitude spectrum; decoder: a VAE's
    # decoder trained on the run's training images (both this project's)
    generator: Literal["deepsim_fc6", "fourier", "maco", "decoder", "pixel"] = "fourier"
    # deepsim_fc6: path to upconvGAN_fc6.pt; maco: out/spectrum.pt; decoder: out/decoder.pt
    generator_weights: str | None = None
    # true: every Adam step scores a randomly shifted, scaled, rotated and noised copy (Lucid, MACO)
    robustness: bool = False
    cma_steps: int = Field(20, ge=0)  # evolution generations
    cma_popsize: int = Field(30, ge=4)  # samples per channel and generation
    cma_sigma: float = Field(2.0, gt=0)  # initial step size in latent units
    adam_steps: int = Field(100, ge=0)
    adam_lr: float = Field(0.01, gt=0)
    # The procedure. Defaults: this project's; configs/paper.yaml sets the paper authors' code's.
    early_exit: bool = (
        True  # stop evolving at the first response, climbing once converged (speed); false: all steps
    )
    evolution: Literal["sep_cma", "fixed_sigma"] = (
        "sep_cma"  # fixed_sigma: the authors' (only the mean moves)
    )
    adam_start: Literal["best", "mean"] = (
        "best"  # Adam from the best sample or the evolution's recombined mean
    )
    objective: Literal["before_relu", "after_relu"] = (
        "before_relu"  # after_relu: the unit's activation itself
    )
    precision: Literal["bfloat16", "float32"] = (
        "bfloat16"  # the GPU search's autocast; the CPU is always float32
    )
    redraw_dead: bool = True  # silent channels get fresh codes and a second evolution
    resize: Literal["antialias", "legacy"] = (
        "antialias"  # deepsim_fc6's 256 px -> image_size (legacy: the authors')
    )
    max_batch: int | None = Field(
        None, ge=1
    )  # images per forward pass; null: all at once on a CPU, as many as fit in free memory on a GPU
    device: Device = "auto"
    executor: Literal["local", "ray"] = "local"  # ray: one Ray task per shard
    ray_address: str | None = None  # existing cluster; null starts a local Ray instance
    # raw: uint8 pixels; png: each image lossless PNG (smaller for smooth images, slower to read).
    # Not part of a shard's identity: changing it re-encodes finished shards, it does not resynthesise.
    shard_format: Literal["raw", "png"] = "raw"

    _layers_exist = field_validator("layers")(_check_layers)

    @model_validator(mode="after")
    def _epochs_and_weights(self) -> ExtractParams:
        if isinstance(self.epochs, int) and self.epochs < 1:
            raise ValueError(f"extract.epochs: a stride must be >= 1, got {self.epochs}")
        if isinstance(self.epochs, list) and not self.epochs:
            raise ValueError("extract.epochs: list at least one epoch, or give all or a stride")
        if self.generator == "deepsim_fc6" and not self.generator_weights:
            raise ValueError(
                "extract.generator_weights: deepsim_fc6 needs its weights file, upconvGAN_fc6.pt from "
                "https://huggingface.co/binxu/DeePSim_DosovitskiyBrox2016 (or use generator: fourier)"
            )
        if self.generator == "maco" and not self.generator_weights:
            raise ValueError(
                "extract.generator_weights: maco needs the magnitude spectrum, out/spectrum.pt "
                "(the spectrum stage's output)"
            )
        if self.generator == "decoder" and not self.generator_weights:
            raise ValueError(
                "extract.generator_weights: decoder needs the trained prior, out/decoder.pt "
                "(the decoder stage's output)"
            )
        return self


class ExemplarParams(_Section):
    """Natural exemplars: each extracted unit's top images of a fixed sample of the data set."""

    splits: list[Literal["train", "unlabeled", "test"]] = Field(["train", "unlabeled"], min_length=1)
    images: int | None = Field(10_000, ge=1)  # sample size; null = every image of the splits
    top_k: int = Field(8, ge=1)  # exemplars kept per unit
    seed: int = Field(0, ge=0)  # draws the sample (the same images for every checkpoint)
    batch_size: int = Field(256, ge=1)
    device: Device = "auto"

    @field_validator("splits")
    @classmethod
    def _distinct(cls, splits: list[str]) -> list[str]:
        if len(set(splits)) != len(splits):
            raise ValueError(f"exemplars.splits: each split once, got {splits}")
        return splits


class ReadabilityParams(_Section):
    """The machine 2-AFC readability score of prototypes and exemplars
    (protoviz_core.measures.readability)."""

    top: int = Field(5, ge=1)  # each unit's top test images: the q+ queries
    bottom_fraction: float = Field(0.3, gt=0, le=0.5)  # the q- queries come from this lowest part
    bottom_draws: int = Field(10, ge=1)  # q- queries per unit
    seed: int = Field(0, ge=0)  # draws the q- queries
    # texture: a colour and orientation descriptor, no weights (offline); or one of the embedding
    # networks, with embed.weights (the paper's path: ImageNet weights)
    observer: Literal[("texture", *NETWORKS)] = "texture"
    batch_size: int = Field(256, ge=1)
    device: Device = "auto"


class DecoderParams(_Section):
    """The decoder image prior: a VAE trained on the training images (protoviz_core.prototypes.decoder_prior).
    Trained by the decoder stage only when extract.generator is decoder."""

    latent_dim: int = Field(32, ge=2)  # the search's latent dimension
    width: int = Field(16, ge=1)  # channels of the last hidden map (8x, 4x, 2x, 1x from the first)
    epochs: int = Field(20, ge=1)
    beta: float = Field(0.1, gt=0)  # weight of the KL term: below 1, sharper images
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.002, gt=0)  # Adam
    seed: int = Field(0, ge=0)
    device: Device = "auto"


class SimilarityParams(_Section):
    """Linear CKA of each extracted layer across epochs, and its units' activations for matching
    units across runs (protoviz_core.measures.similarity)."""

    images: int = Field(250, ge=4)  # held-out test images every checkpoint is measured on
    seed: int = Field(0, ge=0)  # draws them
    batch_size: int = Field(256, ge=1)
    device: Device = "auto"


class EmbedParams(_Section):
    """Prototypes in pixel space and pretrained networks (paper Sec. 6.4)."""

    nets: list[Literal[tuple(NETWORKS)]] = list(NETWORKS)  # pixel space is always included
    weights: Literal["imagenet", "random"] = "imagenet"  # random: tests and offline demos only
    batch_size: int = Field(64, ge=1)  # images per forward pass (the memory budget)
    device: Device = "auto"


class DistanceParams(_Section):
    """Which space, metric and masking metrics/distance.json, the plots and the report show."""

    space: str = "pixel"  # pixel or one of embed.nets
    # mse | cosine | weighted_mse: the mask-weighted mean squared pixel difference (pixel space,
    # masked only), which does not shrink with the receptive field's area (protoviz_core.measures.distance)
    metric: Literal["mse", "cosine", "weighted_mse"] = "mse"
    masked: bool = True  # RF-masked prototypes (the paper's default)

    @model_validator(mode="after")
    def _weighted_needs_pixels_and_masks(self) -> DistanceParams:
        if self.metric == "weighted_mse" and (self.space != "pixel" or not self.masked):
            raise ValueError(
                "distance.metric: weighted_mse weights pixels by the RF mask; it needs space: pixel "
                f"and masked: true (got space: {self.space}, masked: {str(self.masked).lower()}); "
                "choose mse or cosine for other views"
            )
        return self


class ReportParams(_Section):
    """The run's report (paper Fig. 1-8) and its prototype atlas."""

    # Development montage (Fig. 3, 8): units as "layer:channel"; null = units_per_layer
    # evenly spaced extracted channels of every extracted layer.
    units: list[str] | None = None
    units_per_layer: int = Field(2, ge=1)
    # montage columns: a stride k (every k-th epoch from the first, and the last) or a list of epochs
    montage_epochs: int | list[int] = 10
    thumb_size: int = Field(64, ge=8, le=512)  # atlas thumbnail side in pixels (never above the prototypes')

    @field_validator("montage_epochs")
    @classmethod
    def _montage_stride_positive(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"report.montage_epochs: a stride must be >= 1, got {value}")
        if isinstance(value, list) and not value:
            raise ValueError("report.montage_epochs: list at least one epoch, or give a stride")
        return value

    @field_validator("units")
    @classmethod
    def _units_name_layers(cls, units: list[str] | None) -> list[str] | None:
        if units is None:
            return None
        for unit in units:
            layer, _, channel = unit.partition(":")
            if not channel.isdigit():
                raise ValueError(f"report.units: {unit!r} is not 'layer:channel', e.g. 'layer3:17'")
        return units


class Params(_Section):
    """Everything in params.yaml. Top level: the run's condition and seed."""

    aug: Augmentation = "clrjit"  # clrjit: SimCLR default; keepclr: no colour jitter/grayscale
    seed: int = Field(1, ge=0)  # training seed (the paper used 1, 2, 3)
    # which unit of a channel's map is studied: top_left, (H-1)//2 and (W-1)//2 (the authors'
    # code), or centred, the mean of the middle 1, 2 or 4 positions (protoviz_core.engine.units)
    read_unit: Literal["top_left", "centred"] = "top_left"
    data: DataParams = DataParams()
    train: TrainParams = TrainParams()
    probe: ProbeParams = ProbeParams()
    rfmask: RFMaskParams = RFMaskParams()
    extract: ExtractParams = ExtractParams()
    exemplars: ExemplarParams = ExemplarParams()
    readability: ReadabilityParams = ReadabilityParams()
    similarity: SimilarityParams = SimilarityParams()
    decoder: DecoderParams = DecoderParams()
    embed: EmbedParams = EmbedParams()
    distance: DistanceParams = DistanceParams()
    report: ReportParams = ReportParams()

    @model_validator(mode="after")
    def _sections_agree(self) -> Params:
        """Values of two sections that must fit together: the batch and the data, the distances
        shown and the spaces embedded."""
        # Supervision trains on the labelled train split, every other learner on the unlabeled one.
        split = f"n_{training_split(self.train.method)}"
        images = getattr(self.data.synthetic, split)
        if self.data.name == "synthetic" and self.train.batch_size > images:
            raise ValueError(
                f"train.batch_size: {self.train.batch_size} exceeds data.synthetic.{split} "
                f"({images}); lower the batch or add images"
            )
        if "test" in self.exemplars.splits:
            raise ValueError(
                "exemplars.splits: the test split holds the readability stage's queries, which "
                "exemplars must not have seen; draw exemplars from train and unlabeled"
            )
        if self.distance.space != "pixel" and self.distance.space not in self.embed.nets:
            raise ValueError(
                f"distance.space: {self.distance.space!r} is not embedded; use pixel or one of "
                f"embed.nets ({', '.join(self.embed.nets)})"
            )
        return self

    @model_validator(mode="after")
    def _epochs_and_units_exist(self) -> Params:
        """What later stages would find missing, checked from params alone before any stage runs."""
        for key, epochs in (
            ("extract.epochs", self.extract.epochs),
            ("report.montage_epochs", self.report.montage_epochs),
        ):
            if not isinstance(epochs, list):  # "all" or a stride: always within the run
                continue
            if beyond := sorted(e for e in epochs if not 0 <= e <= self.train.epochs):
                raise ValueError(
                    f"{key}: epochs {beyond} are not in this run's 0..{self.train.epochs} "
                    f"(train.epochs); list epochs of that range"
                )
        arch = self.train.backbone
        for key, layers in (
            ("rfmask.layers", self.rfmask.layers),
            ("extract.layers", self.extract.layers),
            ("report.units", [unit.partition(":")[0] for unit in self.report.units or []]),
        ):
            if problem := _unknown_layer(key, layers, arch):
                raise ValueError(problem)
        if self.report.units:
            widths = backbone_layer_widths(arch)
            for unit in self.report.units:
                layer, _, channel = unit.partition(":")
                if layer in widths and int(channel) >= widths[layer]:
                    raise ValueError(
                        f"report.units: {unit!r} names channel {channel} of {layer}, which has "
                        f"channels 0..{widths[layer] - 1}"
                    )
        return self

    def section_hash(self, *keys: str) -> str:
        """Stable short hash of the named top-level keys (e.g. ``"data", "train"``)."""
        dumped = self.model_dump()
        for (section, key), default in _IDENTITY_DEFAULTS.items():
            if dumped[section].get(key) == default:
                del dumped[section][key]
        for section, key in _NOT_IDENTITY:
            dumped[section].pop(key, None)
        # A section added later, at its defaults, leaves the identity of earlier runs as it was.
        dumped = {name: value for name, value in dumped.items() if value != {}}
        payload = json.dumps({k: dumped[k] for k in keys if k in dumped}, sort_keys=True)
        return short_hash(payload)

    def training_hash(self) -> str:
        """Hash of the params that change a run's checkpoints (``aug``, ``seed``, ``data``, ``train``)."""
        return self.section_hash("aug", "seed", "data", "train")

    def training_identity(self) -> str:
        """A checkpoint's configuration identity, and the MLflow tag ``protoviz.training_hash``:
        :meth:`training_hash` and :data:`TRAINING_VERSION`."""
        return f"{self.training_hash()}-v{TRAINING_VERSION}"

    def measurement_hash(self) -> str:
        """Identity of a pipeline run: every section but the views, which change no measurement.

        ``distance`` picks which of the measured spaces and metrics the summaries show
        and ``report`` how the figures look; changing them keeps the run (and its MLflow run).
        """
        unused = () if self.extract.generator == "decoder" else ("decoder",)  # trains nothing then
        return self.section_hash(
            *(key for key in type(self).model_fields if key not in VIEW_SECTIONS and key not in unused)
        )


VIEW_SECTIONS = ("distance", "report")


class ParamsError(ProtovizError, ValueError):
    """params.yaml is missing, unreadable or invalid; the message says how to fix it."""


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at ``loc`` (the parent of an unknown key)."""
    for part in loc:
        annotation = model.model_fields[part].annotation
        model = annotation  # nested sections are models themselves
    return sorted(model.model_fields)


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(str(p) for p in error["loc"])
    key = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(Params, loc[:-1]))
        return f"{key}: unknown key; allowed keys here: {allowed}"
    message = error["msg"].removeprefix("Value error, ")
    if re.match(r"^[\w.]+: ", message):  # our own validators already name their key
        return message
    given = error.get("input")
    return f"{key}: {message} (got {given!r})"


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """Validate a params mapping; raise :class:`ParamsError` naming every bad key."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ParamsError(f"{source}: {problems}") from None


class _AliasError(Exception):
    """A YAML alias (``*name``) met while composing params.yaml; carries its line."""


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader that stops at the first alias, before anything is expanded.

    Aliases let a few lines stand for exponentially many values (nested ``*a`` lists: an
    "alias bomb" grows to gigabytes while being built), and params.yaml has no use for them.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _AliasError(self.peek_event().start_mark.line + 1)
        return super().compose_node(parent, index)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml.

    Raises:
        ParamsError: the file is missing, is not YAML, uses a YAML alias, or holds an invalid value.
    """
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: file not found; run from the repository root")
    try:
        raw = yaml.load(path.read_text(), Loader=_NoAliasLoader) or {}
    except _AliasError as exc:
        raise ParamsError(
            f"{path}: line {exc.args[0]}: a YAML alias (*name); params.yaml takes plain values, "
            "write the value out"
        ) from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc})") from None
    return parse_params(raw, source=str(path))
