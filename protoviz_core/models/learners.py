"""The learners a backbone can be trained with: SimCLR (the paper's), MoCo v2, BYOL, SimSiam,
Barlow Twins, VICReg, DINO, and plain supervision as the reference.

Each is built from lightly's own heads, losses and transforms, with the hyperparameters of
lightly's examples (scaled to ResNet18's 512-d features where the example uses ResNet50's
2048): this project's choices, each labelled in its ``notes``. ``aug`` keeps its meaning for
every method: ``keepclr`` turns the method's own colour jitter and random grayscale off.

Learners live in a registry, :data:`LEARNERS`: a new learner is one class decorated with
:func:`register_learner` in this file. The params schema (``train.method``, fixed when it is
imported, so a learner registered elsewhere is not offered), the training split, the run's
name, the figures' colours and the stages read from it; nothing else names a method. Since the
schema reads it, this file is in every stage's dvc.yaml deps.

A learner is one ``nn.Module`` holding everything a method trains and everything it carries
from step to step (momentum encoders, DINO's teacher and its loss centre, MoCo's memory
bank), so its ``state_dict`` is the whole resume state. Training calls, per step::

    learner.step_begins(epoch, epochs)             # momentum updates (before the forward pass)
    outputs = learner(views)                       # under autocast on a GPU
    loss = learner.criterion([o.float() for o in outputs], labels, epoch)
    loss.backward(); learner.gradients_ready(epoch); optimizer.step()
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from lightly.loss import BarlowTwinsLoss, DINOLoss, NegativeCosineSimilarity, NTXentLoss, VICRegLoss
from lightly.models.modules import (
    BarlowTwinsProjectionHead,
    BYOLPredictionHead,
    BYOLProjectionHead,
    DINOProjectionHead,
    MoCoProjectionHead,
    SimCLRProjectionHead,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
)
from lightly.models.modules.heads import VICRegProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import (
    BYOLTransform,
    BYOLView1Transform,
    BYOLView2Transform,
    DINOTransform,
    MoCoV2Transform,
    SimCLRTransform,
    SimSiamTransform,
    VICRegTransform,
)
from lightly.transforms.simclr_transform import SimCLRViewTransform
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from protoviz_core.engine.normalization import IMAGENET_NORMALIZE
from protoviz_core.models.backbones import FEATURE_DIM, PROJECTION_DIMS

CLASSES = 10  # STL10's


def _momentum_copy(module: nn.Module) -> nn.Module:
    """A copy updated only by momentum: no gradients."""
    copied = copy.deepcopy(module)
    deactivate_requires_grad(copied)
    return copied


class Learner(nn.Module):
    """A backbone and what one method trains it with. Subclasses are registered with
    :func:`register_learner` and define ``view_transform``, ``forward(views) -> tuple of
    tensors`` and ``criterion(outputs, labels, epoch) -> loss``."""

    name = ""  # train.method's value, set by register_learner
    notes = ""  # the heads and loss, and whose choice they are; set by register_learner
    needs_labels = False  # trained on the labelled train split (supervision), not the unlabeled one
    # The train params to look at when the loss ends at chance's (:func:`learned_nothing`).
    tuning_params: tuple[str, ...] = ("train.lr",)

    @classmethod
    def chance_loss(cls, batch_size: int) -> float | None:
        """The loss of outputs that tell no two inputs apart (uniform similarities or class
        probabilities), or None where the loss has no such level."""
        return None

    @classmethod
    def build(cls, backbone: nn.Module, features: int, *, temperature: float, epochs: int) -> Learner:
        """The learner around ``backbone`` (pooled features ``features`` wide); a learner reads
        the train params it uses (SimCLR the temperature, DINO the epochs)."""
        return cls(backbone, features)

    @classmethod
    def view_transform(cls, aug: str, image_size: int, **simclr_settings: float) -> Callable:
        """The method's own augmentation (lightly's transform for it) under ``aug``: a PIL image
        -> a list of normalised (3, S', S') views. ``simclr_settings`` (``min_scale``,
        ``cj_strength``, ``gaussian_blur``) are read by SimCLR only; the others use their
        transforms' defaults at ``image_size``."""
        raise NotImplementedError(f"{cls.__name__} defines no view_transform")

    def __init__(self, backbone: nn.Module, features: int = FEATURE_DIM):
        super().__init__()
        self.backbone = backbone

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) -> pooled features (B, D): 512 (ResNet18), 2048 (ResNet50)."""
        return self.backbone(images).flatten(start_dim=1)

    def step_begins(self, epoch: int, epochs: int) -> None:
        """Before a step's forward pass (epoch counts from 1): momentum updates."""

    def gradients_ready(self, epoch: int) -> None:
        """After ``backward``, before the optimiser's step."""


LEARNERS: dict[str, type[Learner]] = {}
"""The learners by ``train.method``, in the order they are registered (the paper's first)."""
PAPER_METHOD = "simclr"
AUGMENTATIONS = ("clrjit", "keepclr")


def register_learner(name: str, *, notes: str) -> Callable[[type[Learner]], type[Learner]]:
    """A class decorator: the learner ``train.method: name``, its heads and loss described in
    ``notes`` (with whose choice they are)."""

    def register(cls: type[Learner]) -> type[Learner]:
        if name in LEARNERS:
            raise ValueError(
                f"two learners are registered as {name!r}: {LEARNERS[name].__name__}, {cls.__name__}"
            )
        cls.name, cls.notes = name, notes
        LEARNERS[name] = cls
        return cls

    return register


def learner_class(method: str) -> type[Learner]:
    """The registered learner of ``method``.

    Raises:
        ValueError: an unknown method; names ``train.method`` and the methods there are.
    """
    if method not in LEARNERS:
        raise ValueError(f"train.method: {method!r} is not one of {', '.join(LEARNERS)}")
    return LEARNERS[method]


def training_split(method: str) -> str:
    """The STL10 split a learner trains on: ``train`` (labelled) where it needs labels, else
    ``unlabeled``."""
    return "train" if learner_class(method).needs_labels else "unlabeled"


def _colour(aug: str) -> dict[str, float]:
    """lightly transform arguments for ``aug``: keepclr turns colour jitter and grayscale off."""
    return {} if aug == "clrjit" else {"cj_prob": 0.0, "random_gray_scale": 0.0}


def _byol_views(aug: str, image_size: int) -> BYOLTransform:
    """BYOL's two asymmetric views (also Barlow Twins', as in lightly's example)."""
    colour, normalize = _colour(aug), {"normalize": IMAGENET_NORMALIZE}
    return BYOLTransform(
        view_1_transform=BYOLView1Transform(input_size=image_size, **colour, **normalize),
        view_2_transform=BYOLView2Transform(input_size=image_size, **colour, **normalize),
    )


@register_learner(
    "simclr",
    notes="SimCLRProjectionHead(512, 512, 128), NT-Xent at train.temperature (the paper's)",
)
class SimCLRLearner(Learner):
    """Paper Sec. 6.1: lightly's SimCLRProjectionHead(512, 512, 128) and NT-Xent on two views."""

    tuning_params = ("train.temperature", "train.lr", "train.batch_size")

    @classmethod
    def build(cls, backbone: nn.Module, features: int, *, temperature: float, epochs: int) -> Learner:
        return cls(backbone, features, temperature)

    @classmethod
    def view_transform(
        cls,
        aug: str,
        image_size: int,
        *,
        min_scale: float = 0.08,
        cj_strength: float = 1.0,
        gaussian_blur: float = 0.5,
    ) -> SimCLRTransform:
        """lightly's SimCLRTransform at the paper's settings (train.min_scale, cj_strength,
        gaussian_blur): two normalised views; keepclr sets cj_prob and random_gray_scale to 0."""
        keep_colour = aug == "keepclr"
        return SimCLRTransform(
            input_size=image_size,
            cj_prob=0.0 if keep_colour else 0.8,
            cj_strength=cj_strength,
            random_gray_scale=0.0 if keep_colour else 0.2,
            min_scale=min_scale,
            gaussian_blur=gaussian_blur,
            normalize=IMAGENET_NORMALIZE,
        )

    @classmethod
    def chance_loss(cls, batch_size: int) -> float:
        """NT-Xent over a batch of B pairs: each view's partner is one of 2B - 1 candidates."""
        return float(np.log(2 * batch_size - 1))

    def __init__(self, backbone: nn.Module, features: int = FEATURE_DIM, temperature: float = 0.5):
        super().__init__(backbone, features)
        self.projection_head = SimCLRProjectionHead(features, *PROJECTION_DIMS[1:])
        self.loss = NTXentLoss(temperature=temperature)

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        # Both views in one pass: BatchNorm normalises over the 2B images, as in SimCLR.
        return tuple(self.projection_head(self.features(torch.cat(views))).chunk(2))

    def criterion(self, outputs: list[torch.Tensor], labels: torch.Tensor, epoch: int) -> torch.Tensor:
        return self.loss(*outputs)


class _MomentumLearner(Learner):
    """A learner with a momentum copy of its backbone and projection head (``teacher``)."""

    def _make_teacher(self, teacher_head: nn.Module | None = None) -> None:
        """The momentum copies; ``teacher_head`` instead of a copy of the projection head (DINO's
        head holds weight-normalised layers, which cannot be deep-copied; lightly's example builds
        its teacher head anew as well)."""
        self.teacher_backbone = _momentum_copy(self.backbone)
        if teacher_head is None:
            self.teacher_head = _momentum_copy(self.projection_head)
        else:
            deactivate_requires_grad(teacher_head)
            self.teacher_head = teacher_head

    def step_begins(self, epoch: int, epochs: int) -> None:
        momentum = cosine_schedule(epoch - 1, max(epochs, 1), 0.996, 1.0)
        update_momentum(self.backbone, self.teacher_backbone, m=momentum)
        update_momentum(self.projection_head, self.teacher_head, m=momentum)

    def teacher(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher_head(self.teacher_backbone(images).flatten(start_dim=1))


MOCO_MEMORY_BANK = 4096  # negatives kept from earlier batches


@register_learner(
    "moco",
    notes="MoCoProjectionHead(512, 512, 128), momentum 0.996 -> 1, NT-Xent (0.1) with a 4096 memory bank",
)
class MoCoLearner(_MomentumLearner):
    @classmethod
    def view_transform(cls, aug: str, image_size: int, **simclr_settings: float) -> MoCoV2Transform:
        return MoCoV2Transform(input_size=image_size, **_colour(aug), normalize=IMAGENET_NORMALIZE)

    @classmethod
    def chance_loss(cls, batch_size: int) -> float:
        """NT-Xent of a query against its key and the memory bank's negatives."""
        return float(np.log(1 + MOCO_MEMORY_BANK))

    def __init__(self, backbone: nn.Module, features: int = FEATURE_DIM):
        super().__init__(backbone, features)
        self.projection_head = MoCoProjectionHead(features, 512, 128)
        self._make_teacher()
        self.loss = NTXentLoss(temperature=0.1, memory_bank_size=(MOCO_MEMORY_BANK, 128))

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        query, key = views
        return self.projection_head(self.features(query)), self.teacher(key)

    def criterion(self, outputs: list[torch.Tensor], labels: torch.Tensor, epoch: int) -> torch.Tensor:
        query, key = outputs
        return self.loss(query, key.detach())

    # lightly keeps the memory bank in non-persistent buffers; a resumed run needs it.
    def get_extra_state(self) -> dict[str, torch.Tensor]:
        bank = self.loss.memory_bank
        return {"bank": bank.bank.detach().clone(), "bank_ptr": bank.bank_ptr.detach().clone()}

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        bank = self.loss.memory_bank
        bank.bank = state["bank"].to(bank.bank.device)
        bank.bank_ptr = state["bank_ptr"].to(bank.bank_ptr.device)


@register_learner(
    "byol",
    notes="BYOL heads 512 -> 1024 -> 256 -> 1024 -> 256, momentum 0.996 -> 1, negative cosine",
)
class BYOLLearner(_MomentumLearner):
    @classmethod
    def view_transform(cls, aug: str, image_size: int, **simclr_settings: float) -> BYOLTransform:
        return _byol_views(aug, image_size)

    @classmethod
    def chance_loss(cls, batch_size: int) -> float:
        """Negative cosine similarity of unrelated predictions and targets."""
        return 0.0

    def __init__(self, backbone: nn.Module, features: int = FEATURE_DIM):
        super().__init__(backbone, features)
        self.projection_head = BYOLProjectionHead(features, 1024, 256)
        self.prediction_head = BYOLPredictionHead(256, 1024, 256)
        self._make_teacher()
        self.loss = NegativeCosineSimilarity()

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        first, second = views
        p0 = self.prediction_head(self.projection_head(self.features(first)))
        p1 = self.prediction_head(self.projection_head(self.features(second)))
        return p0, p1, self.teacher(first), self.teacher(second)

    def criterion(self, outputs: list[torch.Tensor], labels: torch.Tensor, epoch: int) -> torch.Tensor:
        p0, p1, z0, z1 = outputs
        return 0.5 * (self.loss(p0, z1.detach()) + self.loss(p1, z0.detach()))


@register_learner(
    "simsiam",
    notes="SimSiam heads 512 -> 512 -> 128 -> 64 -> 128, negative cosine, stop-gradient",
)
class SimSiamLearner(Learner):
    @classmethod
    def view_transform(cls, aug: str, image_size: int, **simclr_settings: float) -> SimSiamTransform:
        return SimSiamTransform(input_size=image_size, **_colour(aug), normalize=IMAGENET_NORMALIZE)

    @classmethod
    def chance_loss(cls, batch_size: int) -> float:
        """Negative cosine similarity of unrelated predictions and targets."""
        return 0.0

    def __init__(self, backbone: nn.Module, features: int = FEATURE_DIM):
        super().__init__(backbone, features)
        self.projection_head = SimSiamProjectionHead(features, 512, 128)
        self.prediction_head = SimSiamPredictionHead(128, 64, 128)
        self.loss = NegativeCosineSimilarity()

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        z0, z1 = (self.projection_head(self.features(view)) for view in views)
        return z0, z1, self.prediction_head(z0), self.prediction_head(z1)

    def criterion(self, outputs: list[torch.Tensor], labels: torch.Tensor, epoch: int) -> torch.Tensor:
        z0, z1, p0, p1 = outputs
        return 0.5 * (self.loss(z0.detach(), p1) + self.loss(z1.detach(), p0))


class _TwinLearner(Learner):
    """Two views through one projection head, a loss on the pair (Barlow Twins, VICReg)."""

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return tuple(self.projection_head(self.features(view)) for view in views)

    def criterion(self, outputs: list[torch.Tensor], labels: torch.Tensor, epoch: int) -> torch.Tensor:
        return self.loss(*outputs)


@register_learner(
    "barlowtwins",
    notes="BarlowTwinsProjectionHead(512, 2048, 2048), BarlowTwinsLoss (lambda 5e-3)",
)
class BarlowTwinsLearner(_TwinLearner):
    @classmethod
    def view_transform(cls, aug: str, image_size: int, **simclr_settings: float) -> BYOLTransform:
        return _byol_views(aug, image_size)

    def __init__(self, backbone: nn.Module, features: int = FEATURE_DIM):
        super().__init__(backbone, features)
        self.projection_head = BarlowTwinsProjectionHead(features, 2048, 2048)
        self.loss = BarlowTwinsLoss()


@register_learner(
    "vicreg",
    notes="VICRegProjectionHead(512, 2048, 2048, 2 layers), VICRegLoss (25, 25, 1)",
)
class VICRegLearner(_TwinLearner):
    @classmethod
    def view_transform(cls, aug: str, image_size: int, **simclr_settings: float) -> VICRegTransform:
        return VICRegTransform(input_size=image_size, **_colour(aug), normalize=IMAGENET_NORMALIZE)

    def __init__(self, backbone: nn.Module, features: int = FEATURE_DIM):
        super().__init__(backbone, features)
        self.projection_head = VICRegProjectionHead(features, 2048, 2048, num_layers=2)
        self.loss = VICRegLoss()


DINO_LOCAL_VIEWS = 6
DINO_OUTPUT_DIM = 2048


@register_learner(
    "dino",
    notes="DINO head 512 -> 512 -> 64 -> 2048, teacher momentum 0.996 -> 1, 2 global + 6 local views",
)
class DINOLearner(_MomentumLearner):
    tuning_params = ("train.lr", "train.epochs")

    @classmethod
    def build(cls, backbone: nn.Module, features: int, *, temperature: float, epochs: int) -> Learner:
        return cls(backbone, features, epochs)

    @classmethod
    def view_transform(cls, aug: str, image_size: int, **simclr_settings: float) -> DINOTransform:
        """2 global views at ``image_size`` and :data:`DINO_LOCAL_VIEWS` local ones."""
        return DINOTransform(
            global_crop_size=image_size,
            local_crop_size=max(8, image_size * 96 // 224),  # DINO's 96 of 224, at this size
            n_local_views=DINO_LOCAL_VIEWS,
            **_colour(aug),
            normalize=IMAGENET_NORMALIZE,
        )

    @classmethod
    def chance_loss(cls, batch_size: int) -> float:
        """Cross-entropy between uniform teacher and student outputs over the head's dimensions."""
        return float(np.log(DINO_OUTPUT_DIM))

    def __init__(self, backbone: nn.Module, features: int = FEATURE_DIM, epochs: int = 1):
        super().__init__(backbone, features)
        self.projection_head = DINOProjectionHead(features, 512, 64, DINO_OUTPUT_DIM, freeze_last_layer=1)
        self._make_teacher(DINOProjectionHead(features, 512, 64, DINO_OUTPUT_DIM))
        # The teacher temperature warms up over the first epochs (at most 30, DINO's).
        self.loss = DINOLoss(output_dim=DINO_OUTPUT_DIM, warmup_teacher_temp_epochs=min(30, max(epochs, 1)))

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        teacher = [self.teacher(view) for view in views[:2]]  # the global views
        student = [self.projection_head(self.features(view)) for view in views]
        return (*teacher, *student)

    def criterion(self, outputs: list[torch.Tensor], labels: torch.Tensor, epoch: int) -> torch.Tensor:
        return self.loss(outputs[:2], outputs[2:], epoch=epoch - 1)

    def gradients_ready(self, epoch: int) -> None:
        self.projection_head.cancel_last_layer_gradients(current_epoch=epoch - 1)


@register_learner(
    "supervised",
    notes="a linear classifier on the pooled features, cross-entropy on the labelled train split",
)
class SupervisedLearner(Learner):
    needs_labels = True

    @classmethod
    def view_transform(cls, aug: str, image_size: int, **simclr_settings: float) -> Callable:
        """One view: SimCLR's crop, flip and colour (under ``aug``), no blur."""
        view = SimCLRViewTransform(
            input_size=image_size, gaussian_blur=0.0, **_colour(aug), normalize=IMAGENET_NORMALIZE
        )
        return lambda image: [view(image)]

    @classmethod
    def chance_loss(cls, batch_size: int) -> float:
        """Cross-entropy of a classifier that gives every class the same probability."""
        return float(np.log(CLASSES))

    def __init__(self, backbone: nn.Module, features: int = FEATURE_DIM):
        super().__init__(backbone, features)
        self.classifier = nn.Linear(features, CLASSES)
        self.loss = nn.CrossEntropyLoss()

    def forward(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        return (self.classifier(self.features(views[0])),)

    def criterion(self, outputs: list[torch.Tensor], labels: torch.Tensor, epoch: int) -> torch.Tensor:
        return self.loss(outputs[0], labels)


def build_learner(
    method: str, backbone: nn.Module, *, features: int = FEATURE_DIM, temperature: float, epochs: int
) -> Learner:
    """The learner of ``method`` around ``backbone``, whose pooled features are ``features`` wide.

    Raises:
        ValueError: an unknown method; names ``train.method`` and the methods there are.
    """
    return learner_class(method).build(backbone, features, temperature=temperature, epochs=epochs)


def view_transform(
    method: str,
    aug: str,
    image_size: int,
    *,
    min_scale: float = 0.08,
    cj_strength: float = 1.0,
    gaussian_blur: float = 0.5,
) -> Callable:
    """The augmentation ``method`` trains with under ``aug`` (:meth:`Learner.view_transform`):
    a PIL image -> a list of normalised views. ``min_scale``, ``cj_strength`` and
    ``gaussian_blur`` are the paper's SimCLR settings (train's); the other learners use their
    transforms' defaults.

    Raises:
        ValueError: an unknown ``aug`` or ``method``, named.
    """
    if aug not in AUGMENTATIONS:
        raise ValueError(f"aug must be 'clrjit' or 'keepclr', got {aug!r}")
    settings = {"min_scale": min_scale, "cj_strength": cj_strength, "gaussian_blur": gaussian_blur}
    return learner_class(method).view_transform(aug, image_size, **settings)
