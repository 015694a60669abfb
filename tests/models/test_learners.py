import numpy as np
import pytest
import torch

from protoviz_core.models.backbones import FEATURE_DIMS, build_backbone
from protoviz_core.models.learners import (
    CLASSES,
    LEARNERS,
    PAPER_METHOD,
    SimCLRLearner,
    build_learner,
    register_learner,
    training_split,
    view_transform,
)
from protoviz_core.pipeline.config import BACKBONES, METHODS, Params, ParamsError, TrainParams, parse_params
from protoviz_core.training.checkpoints import load_backbone
from protoviz_core.training.loop import train_learner
from tests.helpers import TINY_IMAGE_SIZE, tiny_params


class _Killed(Exception):
    pass


@pytest.fixture
def one_batch(tiny_images):
    """uint8 (32, 3, 24, 24): one SGD step per epoch at batch size 32. What a learner does
    differs from another in its heads, loss and views, not in how many steps it takes, and
    every learner here keeps a ResNet18's checkpoints and resume state on disk each epoch."""
    return tiny_images[:32]


def _train(images, directory, config: TrainParams, labels=None, **kwargs):
    return train_learner(
        images,
        config,
        labels=labels,
        aug="clrjit",
        seed=1,
        image_size=TINY_IMAGE_SIZE,
        checkpoint_dir=directory / "checkpoints",
        state_path=directory / "state.pt",
        training_hash=f"h-{config.method}-{config.backbone}",
        device=torch.device("cpu"),
        log=lambda message: None,
        **kwargs,
    )


def _config(**values) -> TrainParams:
    return TrainParams(**{"epochs": 2, "batch_size": 32, "num_workers": 0, "device": "cpu", **values})


@pytest.mark.parametrize("method", METHODS)
def test_every_learner_trains_and_a_killed_run_resumes_to_the_uninterrupted_weights(
    tmp_path, one_batch, method
):
    labels = np.arange(len(one_batch)) % 10 if LEARNERS[method].needs_labels else None
    config = _config(method=method)
    straight = _train(one_batch, tmp_path / "straight", config, labels)
    assert straight.trained_epochs == [1, 2] and all(np.isfinite(list(straight.losses.values())))
    first, last = (torch.load(straight.checkpoints[e], weights_only=True) for e in (0, 2))
    assert last["method"] == method
    assert not torch.equal(first["backbone"]["conv1.weight"], last["backbone"]["conv1.weight"])

    def killed_after_epoch_1(epoch, loss):
        if epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        _train(one_batch, tmp_path / "resumed", config, labels, on_epoch_end=killed_after_epoch_1)
    resumed = _train(one_batch, tmp_path / "resumed", config, labels)
    assert resumed.trained_epochs == [2]
    # The whole learner (momentum encoders, DINO's teacher and centre, MoCo's memory bank) resumed.
    straight_state = torch.load(tmp_path / "straight/state.pt", weights_only=True)["model"]
    resumed_state = torch.load(tmp_path / "resumed/state.pt", weights_only=True)["model"]
    assert straight_state.keys() == resumed_state.keys()
    for key in straight_state:
        torch.testing.assert_close(resumed_state[key], straight_state[key], msg=key)


def test_momentum_learners_keep_their_teachers_in_the_resume_state():
    torch.manual_seed(0)
    for method, teacher_key in (
        ("byol", "teacher_backbone."),
        ("moco", "_extra_state"),
        ("dino", "teacher_head."),
    ):
        keys = build_learner(method, build_backbone(), temperature=0.5, epochs=2).state_dict()
        assert any(key.startswith(teacher_key) for key in keys), method


@pytest.mark.parametrize("method", METHODS)
def test_keepclr_turns_every_learners_colour_jitter_and_grayscale_off(method):
    """A uniformly coloured image keeps its colour in every view without colour jitter (a colour
    below solarisation's threshold, which some methods apply under both conditions)."""
    from PIL import Image

    image = Image.fromarray(np.broadcast_to(np.array([100, 40, 90], dtype=np.uint8), (32, 32, 3)).copy())
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    target = torch.tensor([100, 40, 90]).float()[:, None, None] / 255

    def largest_change(aug: str) -> float:
        torch.manual_seed(0)
        transform = view_transform(method, aug, 32)
        views = [view for _ in range(10) for view in transform(image)]
        return max(float(((view * std + mean) - target).abs().max()) for view in views)

    # Crops, flips and blur leave a flat image's colour; only jitter and grayscale move it.
    assert largest_change("keepclr") < 0.02
    assert largest_change("clrjit") > 0.1


def test_an_unknown_augmentation_is_refused_naming_the_conditions():
    with pytest.raises(ValueError, match="clrjit"):
        view_transform("simclr", "none", 32)


def test_the_registry_is_what_train_method_offers_and_each_learner_carries_its_facts():
    assert METHODS == tuple(LEARNERS) and METHODS[0] == PAPER_METHOD == TrainParams().method
    for name, learner in LEARNERS.items():
        assert learner.name == name and learner.notes, name
    assert [name for name, learner in LEARNERS.items() if learner.needs_labels] == ["supervised"]
    assert training_split("supervised") == "train" and training_split("byol") == "unlabeled"
    # The schema's batch check reads the split from the registry: supervision's labelled images.
    values = tiny_params()  # batch 32: 64 unlabeled images, 20 labelled
    Params.model_validate(values)
    values["train"]["method"] = "supervised"
    with pytest.raises(ValueError, match="data.synthetic.n_train"):
        Params.model_validate(values)


def test_a_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="'simclr'"):

        @register_learner("simclr", notes="a second SimCLR")
        class Twice(SimCLRLearner):
            pass

    assert LEARNERS["simclr"] is SimCLRLearner


def test_an_unknown_method_is_one_line_naming_the_param():
    with pytest.raises(ValueError, match="train.method"):
        Params.model_validate({**tiny_params(), "train": {**tiny_params()["train"], "method": "swav"}})


def test_the_paper_learners_identity_is_unchanged_by_the_method_and_backbone_keys():
    params = Params.model_validate(tiny_params())
    byol = params.model_copy(update={"train": params.train.model_copy(update={"method": "byol"})})
    assert byol.training_hash() != params.training_hash()
    dumped = params.model_dump()
    del dumped["train"]["method"], dumped["train"]["backbone"]  # at the paper's values: left out
    del dumped["train"]["state_every"]  # how the run is kept, not what it computes: always left out
    import hashlib
    import json

    payload = json.dumps({k: dumped[k] for k in ("aug", "seed", "data", "train")}, sort_keys=True)
    assert params.training_hash() == hashlib.sha256(payload.encode()).hexdigest()[:24]


@pytest.mark.parametrize("arch", BACKBONES)
def test_every_backbone_trains_and_its_checkpoints_load_as_that_backbone(tmp_path, one_batch, arch):
    result = _train(one_batch, tmp_path, _config(backbone=arch, epochs=1))
    backbone, meta = load_backbone(result.checkpoints[1])
    assert meta["arch"] == arch and np.isfinite(result.losses[1])
    assert backbone(torch.rand(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)).shape == (2, FEATURE_DIMS[arch])


def test_layers_the_backbone_lacks_are_one_line_naming_the_key_and_the_backbone():
    raw = {**tiny_params(), "train": {**tiny_params()["train"], "backbone": "mobilenet_v2"}}
    with pytest.raises(
        ParamsError, match=r"rfmask.layers: unknown layer 'layer1'; mobilenet_v2 \(train.backbone\)"
    ):
        parse_params(raw)
    layers = ["features.4", "features.18"]
    params = parse_params({**raw, "rfmask": {"layers": layers}, "extract": {"layers": layers}})
    assert params.train.backbone == "mobilenet_v2" and params.extract.layers == layers


def test_the_chance_level_is_the_loss_of_outputs_that_tell_nothing_apart():
    """Measured: lightly's own losses on constant embeddings equal each learner's chance_loss."""
    constant = torch.ones(16, 128)
    simclr = build_learner("simclr", build_backbone(), temperature=0.2, epochs=1)
    chance = LEARNERS["simclr"].chance_loss(16)
    assert float(simclr.loss(constant, constant)) == pytest.approx(chance, rel=1e-5)
    logits = torch.zeros(16, CLASSES)
    supervised = build_learner("supervised", build_backbone(), temperature=0.5, epochs=1)
    labels = torch.arange(16) % CLASSES
    assert float(supervised.loss(logits, labels)) == pytest.approx(LEARNERS["supervised"].chance_loss(16))
