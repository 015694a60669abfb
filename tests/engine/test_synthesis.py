import dataclasses
from collections import OrderedDict

import pytest
import torch
from torch import nn

from protoviz_core import synthesize
from protoviz_core.engine.generators import make_generator
from protoviz_core.engine.rng import stream_keys
from protoviz_core.engine.robustness import Robustness
from protoviz_core.engine.synthesis import Procedure, stream_seed
from tests.fake_cuda import fake_cuda

SIZE = 16
SCHEDULE = dict(image_size=SIZE, cma_steps=4, cma_popsize=8, cma_sigma=1.0, adam_steps=10, adam_lr=0.05)


def _procedure(generator="pixel", **changes) -> Procedure:
    """The tests' small schedule with ``generator``; ``changes``: other fields."""
    return Procedure(generator=generator, **{**SCHEDULE, **changes})


def _cnn(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 8, 3, padding=1),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(8, 6, 3, stride=2, padding=1),
            relu2=nn.ReLU(),
            head=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 2)),
        )
    ).eval()


@pytest.mark.parametrize("generator", ["pixel", "fourier", "deepsim_fc6"])
def test_activation_rises_for_every_generator(generator):
    weights = "random" if generator == "deepsim_fc6" else None
    torch.manual_seed(1)
    prior = make_generator(generator, SIZE, weights)
    model = _cnn()
    channels = torch.arange(6)
    with torch.no_grad():
        start_images = prior(prior.sample(stream_keys(0, channels)))
        normalised = (start_images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]
        ).view(1, 3, 1, 1)
        start = model.conv2(model.relu1(model.conv1(normalised)))[torch.arange(6), channels, 3, 3]
    result = synthesize(model, "conv2", None, _procedure(prior), seed=0)
    assert result.images.shape == (6, 3, SIZE, SIZE) and result.latents.shape == (6, prior.latent_dim)
    assert (result.activations >= result.evolution_activations - 1e-4).all()  # Adam only climbs
    assert result.activations.mean() > start.mean() + 0.05
    assert result.evolution_activations.mean() > start.mean()


def test_one_channel_at_a_time_gives_the_batched_result():
    model = _cnn()
    batched = synthesize(model, "conv2", [0, 2, 5], _procedure("fourier"), seed=3)
    for i, channel in enumerate([0, 2, 5]):
        alone = synthesize(model, "conv2", [channel], _procedure("fourier"), seed=3)
        torch.testing.assert_close(alone.activations[0], batched.activations[i], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(alone.latents[0], batched.latents[i], rtol=1e-3, atol=1e-3)


def test_chunking_changes_nothing_and_runs_are_reproducible():
    model = _cnn()
    whole = synthesize(model, "conv2", None, _procedure(), seed=7)
    chunked = synthesize(model, "conv2", None, _procedure(max_batch=5), seed=7)
    again = synthesize(model, "conv2", None, _procedure(), seed=7)
    torch.testing.assert_close(chunked.activations, whole.activations, rtol=1e-4, atol=1e-4)
    assert torch.equal(again.images, whole.images) and torch.equal(again.latents, whole.latents)
    other_seed = synthesize(model, "conv2", None, _procedure(), seed=8)
    assert not torch.equal(other_seed.latents, whole.latents)


def _cnn_with_a_silent_channel():
    model = _cnn()
    with torch.no_grad():  # channel 4 can never fire: no weights, negative bias
        model.conv2.weight[4] = 0
        model.conv2.bias[4] = -1
    return model


def test_silent_channel_gets_really_redrawn_codes():
    model = _cnn_with_a_silent_channel()
    result = synthesize(model, "relu2", None, _procedure(), seed=2)
    assert result.redrawn[4] and result.dead[4]
    assert not result.dead[[0, 1, 2, 3, 5]].any()  # the others respond (re-drawn or not)
    prior = make_generator("pixel", SIZE)
    first_draw = prior.sample(stream_keys(stream_seed(2, "start"), torch.tensor([4])))[0]
    second_draw = prior.sample(stream_keys(stream_seed(2, "redraw start"), torch.tensor([4])))[0]
    assert not torch.equal(result.latents[4], first_draw)
    torch.testing.assert_close(result.latents[4], second_draw)  # the re-drawn code was kept


def test_a_channel_still_silent_after_the_evolution_is_redrawn_on_a_gpu():
    """On CUDA the evolution's scores live on the device and the channel index on the host; the
    re-draw must index each where it lives (a GPU refuses a device index into a host tensor)."""
    with fake_cuda() as gpu:
        result = synthesize(_cnn_with_a_silent_channel(), "relu2", None, _procedure(), seed=2, device="cuda")
    assert gpu.memory.resets == 1  # the GPU branch ran: passes sized from a probe pass
    assert result.redrawn[4] and result.dead[4] and not result.dead[[0, 1, 2, 3, 5]].any()
    second_draw = make_generator("pixel", SIZE).sample(
        stream_keys(stream_seed(2, "redraw start"), torch.tensor([4]))
    )
    torch.testing.assert_close(result.latents[4], second_draw[0])


def test_on_a_gpu_the_search_runs_in_bfloat16_and_the_reported_activations_are_float32():
    model = _cnn()
    with fake_cuda():
        result = synthesize(model, "relu2", None, _procedure(), seed=7, device="cuda")
    model.to("cpu")
    with torch.no_grad():
        normalised = (result.images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]
        ).view(1, 3, 1, 1)
        exact = model.relu2(model.conv2(model.relu1(model.conv1(normalised))))[
            torch.arange(6), torch.arange(6), 3, 3
        ]
    torch.testing.assert_close(result.activations, exact, rtol=1e-5, atol=1e-6)  # not bfloat16's 0.4% steps


def test_gpu_passes_are_sized_to_free_memory_and_their_size_changes_nothing():
    model = _cnn()
    batches = []
    model.conv1.register_forward_hook(lambda module, inputs, output: batches.append(len(inputs[0])))
    with fake_cuda(free_bytes=2**40):
        roomy = synthesize(model, "relu2", None, _procedure(), seed=7, device="cuda")
    widest = max(batches)
    batches.clear()
    with fake_cuda(free_bytes=1):  # room for no more than the probe's own 8 images
        tight = synthesize(model, "relu2", None, _procedure(), seed=7, device="cuda")
    assert widest == 6 * SCHEDULE["cma_popsize"] and max(batches) == 8
    torch.testing.assert_close(tight.activations, roomy.activations)
    torch.testing.assert_close(tight.latents, roomy.latents)


def _synthesize_watched(model, layer, seed, procedure):
    """``synthesize`` with what the monitor saw: (result, [(stage, activations), ...])."""
    seen = []
    result = synthesize(
        model,
        layer,
        None,
        procedure,
        seed=seed,
        monitor=lambda stage, step, values: seen.append((stage, values.clone())),
    )
    return result, seen


def test_a_unit_below_zero_on_every_image_tried_is_brought_alive():
    """Channel 1 fires only for red without green over its whole 3x3 window: on the start codes, every
    evolution sample and uniform noise its input is far below zero, so its activation is 0 everywhere."""
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(block=nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(inplace=True)))
    )
    with torch.no_grad():
        model.block[0].weight.zero_()
        model.block[0].weight[0] = 0.1  # channel 0: an ordinary unit
        model.block[0].weight[1, 0], model.block[0].weight[1, 1] = 1.0, -1.0
        model.block[0].bias[:] = torch.tensor([0.0, -7.0 * 4.4])  # 7 of 9 pixels' worth, normalised units
        noise = (
            torch.rand(256, 3, SIZE, SIZE) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        ) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        assert model(noise)[:, 1, SIZE // 2 - 1, SIZE // 2 - 1].max() == 0  # silent on noise too
    result, seen = _synthesize_watched(model, "block", 0, _procedure(adam_steps=40, adam_lr=0.1))
    assert seen[0][0] == "evolution" and seen[0][1][1] < 0  # it starts below zero
    assert not result.dead.any() and result.activations[1] > 0  # and ends alive
    with torch.no_grad():
        normalised = (result.images - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]
        ).view(1, 3, 1, 1)
        recomputed = model(normalised)[1, 1, (SIZE - 1) // 2, (SIZE - 1) // 2]
    # The honest activation
    torch.testing.assert_close(recomputed, result.activations[1], rtol=1e-4, atol=1e-4)


def test_bad_layer_and_channel_are_named_and_hooks_are_removed():
    model = _cnn()
    with pytest.raises(ValueError, match="unknown layer 'conv3'; valid names: conv1"):
        synthesize(model, "conv3", None, _procedure(), seed=0)
    with pytest.raises(ValueError, match="channel 6 out of range for layer 'conv2': valid 0..5"):
        synthesize(model, "conv2", [6], _procedure(), seed=0)
    synthesize(model, "conv2", [0], _procedure(), seed=0)
    assert all(not m._forward_hooks for m in model.modules())


def test_gradient_stage_transforms_are_applied_with_each_channels_own_keys():
    calls = []

    def jitter(images, keys, step):
        calls.append((images.shape, keys.tolist(), step))
        return torch.roll(images, shifts=1, dims=-1)

    synthesize(_cnn(), "conv2", [0, 1], _procedure(transforms=[jitter], early_exit=False), seed=0)
    assert len(calls) == SCHEDULE["adam_steps"] and calls[0][0] == (2, 3, SIZE, SIZE)
    assert [step for _, _, step in calls] == list(range(1, SCHEDULE["adam_steps"] + 1))
    assert calls[0][1] == calls[-1][1] and len(set(calls[0][1])) == 2  # a key per channel, kept over steps


def test_robust_synthesis_gives_a_channel_the_same_prototype_alone_or_in_a_batch():
    model = _cnn()
    robust = [Robustness()]
    together = synthesize(model, "conv2", [0, 1, 2], _procedure("fourier", transforms=robust), seed=3)
    alone = synthesize(model, "conv2", [1], _procedure("fourier", transforms=robust), seed=3)
    assert torch.equal(together.images[1], alone.images[0])
    plain = synthesize(model, "conv2", [1], _procedure("fourier"), seed=3)
    assert not torch.equal(plain.images[0], alone.images[0])  # the transforms did change the search


def test_monitor_sees_every_step_of_every_stage():
    seen = []
    synthesize(
        _cnn(),
        "conv2",
        [1, 3],
        _procedure(),
        seed=0,
        monitor=lambda stage, step, acts: seen.append((stage, step, tuple(acts.shape))),
    )
    evolution = [s for s in seen if s[0] == "evolution"]
    gradient = [s for s in seen if s[0] == "gradient"]
    assert [s[1] for s in evolution] == list(range(1, SCHEDULE["cma_steps"] + 1))
    assert [s[1] for s in gradient] == list(range(1, SCHEDULE["adam_steps"] + 1))
    assert all(shape == (2,) for _, _, shape in evolution + gradient)


def test_model_is_left_as_it_was():
    model = _cnn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    synthesize(model, "conv2", [0], _procedure(), seed=0)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_start_codes_and_evolution_noise_are_independent(monkeypatch):
    """The first generation's noise must not be the start code again (it was: cosine 0.5)."""
    import protoviz_core.engine.synthesis as synthesis_module

    seen = {}

    class Recording(synthesis_module.BatchedCMAES):
        def ask(self):
            samples = super().ask()
            if self.generation == 0:
                seen["start"], seen["noise"] = self.mean.clone(), self._z.clone()  # (N, n), (N, P, n)
            return samples

    monkeypatch.setattr(synthesis_module, "BatchedCMAES", Recording)
    synthesize(_cnn(), "conv2", None, _procedure(redraw_dead=False, cma_steps=1), seed=5)
    start = torch.nn.functional.normalize(seen["start"], dim=1)[:, None, :]  # (N, 1, n)
    noise = torch.nn.functional.normalize(seen["noise"], dim=2)  # (N, P, n)
    cosine = (start * noise).sum(dim=2)  # (N, P)
    assert cosine.abs().max() < 0.15, cosine  # 1/sqrt(n) scale for independent vectors


def test_stream_seeds_differ_by_use():
    seeds = {use: stream_seed(3, use) for use in ("start", "evolution", "redraw start", "redraw evolution")}
    assert len(set(seeds.values())) == 4
    with pytest.raises(ValueError, match="start"):
        stream_seed(3, "begin")


def test_images_per_pass_takes_a_fraction_of_free_memory():
    from protoviz_core.engine.synthesis import images_per_pass

    assert images_per_pass(free_bytes=10_000_000, bytes_per_image=1_000, fraction=0.5) == 5_000
    assert images_per_pass(free_bytes=1_000, bytes_per_image=1_000_000) == 8  # never below one probe's worth


def test_stopped_channels_give_the_same_result_in_or_out_of_the_batch(monkeypatch):
    """A CPU drops stopped channels from the batch; a GPU keeps them frozen. The prototypes
    must not differ."""
    import protoviz_core.engine.synthesis as synthesis

    procedure = _procedure(adam_steps=40)
    model = _cnn()
    left = synthesize(model, "relu2", None, procedure, seed=5)
    monkeypatch.setattr(synthesis, "_stopped_leave_the_batch", lambda device: False)
    kept = synthesize(model, "relu2", None, procedure, seed=5)
    torch.testing.assert_close(left.latents, kept.latents, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(left.activations, kept.activations, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(left.evolution_activations, kept.evolution_activations)


def test_a_channel_stops_evolving_once_it_responds_and_climbing_once_it_converges():
    model = _cnn()
    images_seen = []
    model.conv1.register_forward_hook(lambda module, inputs, output: images_seen.append(len(inputs[0])))
    procedure = _procedure(cma_steps=6, adam_steps=400, adam_lr=0.2)
    result, seen = _synthesize_watched(model, "relu2", 5, procedure)
    evolution = torch.stack([values for stage, values in seen if stage == "evolution"])  # (steps, N)
    responding = evolution[0] > 0
    assert responding.any()
    # Frozen from the first generation
    assert torch.equal(evolution[-1][responding], evolution[0][responding])
    climbing = torch.stack([values for stage, values in seen if stage == "gradient"])  # (steps, N)
    assert torch.equal(climbing[-1], climbing[-5]) and not torch.equal(climbing[10], climbing[0])  # converged
    channels, steps = (
        len(result.channels),
        procedure.cma_steps * procedure.cma_popsize + procedure.adam_steps,
    )
    assert sum(images_seen) < 0.5 * channels * steps  # most of the work was not needed


def test_reported_activations_are_those_of_the_8_bit_images_the_store_keeps():
    from protoviz_core.prototypes.store import pack_shard

    model = _cnn()
    result = synthesize(model, "relu2", None, _procedure("fourier"), seed=3)
    stored = pack_shard(result)["images"].float() / 255  # what the prototype store holds
    assert torch.equal(result.images, stored)
    with torch.no_grad():
        normalised = (stored - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]
        ).view(1, 3, 1, 1)
        exact = model.relu2(model.conv2(model.relu1(model.conv1(normalised))))[
            torch.arange(6), torch.arange(6), 3, 3
        ]
    torch.testing.assert_close(result.activations, exact, rtol=1e-6, atol=1e-6)


def test_after_relu_maximises_the_activation_itself_and_early_exits_change_the_work_not_the_kind():
    model = _cnn()
    seen = []
    result = synthesize(
        model,
        "relu2",
        None,
        _procedure(objective="after_relu"),
        seed=7,
        monitor=lambda stage, step, values: seen.append((stage, values.clone())),
    )
    evolution = torch.stack([values for stage, values in seen if stage == "evolution"])
    assert (evolution >= 0).all()  # a score after the ReLU is never negative
    assert (result.evolution_activations >= 0).all()
    batches = []
    model.conv1.register_forward_hook(lambda module, inputs, output: batches.append(len(inputs[0])))
    synthesize(model, "relu2", None, _procedure(early_exit=False), seed=7)
    full = list(batches)
    batches.clear()
    synthesize(model, "relu2", None, _procedure(), seed=7)
    assert sum(batches) < sum(full) and full == [1, 6] + [6 * 8] * 4 + [6] * 10 + [6]  # 1: the probe image
    with pytest.raises(ValueError, match="objective must be one of"):
        _procedure(objective="logit")


def test_silent_units_of_a_pooling_layer_after_a_relu_are_brought_alive():
    """A layer that does not itself end in a ReLU (a VGG-style max pool after one): its silent units are
    optimised through the pool of their pre-activations; the activation alone leaves them at 0."""
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 8, 3, padding=1),
            relu1=nn.ReLU(),
            conv2=nn.Conv2d(8, 6, 3, padding=1),
            relu2=nn.ReLU(),
            pool=nn.MaxPool2d(2),
        )
    ).eval()
    with torch.no_grad():
        model.conv2.bias[:3] -= 1.0  # channels 0-2: silent on every image the search starts from
    budget = dict(adam_steps=30, adam_lr=0.1)
    paper = synthesize(model, "pool", None, _procedure(objective="after_relu", **budget), seed=7)
    assert paper.dead[:3].all() and not paper.dead[3:].any()
    engine = synthesize(model, "pool", None, _procedure(**budget), seed=7)
    assert not engine.dead.any() and (engine.activations[:3] > 0).all()


def test_a_procedure_refuses_bad_sizes_and_unknown_options_when_it_is_made():
    with pytest.raises(ValueError, match="cma_popsize >= 4"):
        _procedure(cma_popsize=3)
    with pytest.raises(ValueError, match="evolution must be one of"):
        _procedure(evolution="full_cma")
    with pytest.raises(ValueError, match="read_unit must be one of"):
        _procedure(read_unit="middle")
    with pytest.raises(dataclasses.FrozenInstanceError):
        _procedure().adam_lr = 1.0
    assert _procedure(transforms=[Robustness()]).transforms == (Robustness(),)  # a list becomes a tuple


def test_a_procedure_from_an_extract_section_reads_its_keys_and_robustness_as_transforms():
    extract = {
        "layers": ["layer1"],
        "generator": "fourier",
        **SCHEDULE,
        "robustness": True,
        "objective": "after_relu",
    }
    del extract["image_size"]
    procedure = Procedure.from_extract(extract, SIZE, adam_lr=0.3)
    assert procedure == _procedure("fourier", transforms=[Robustness()], objective="after_relu", adam_lr=0.3)
    assert Procedure.from_extract({**extract, "robustness": False}, SIZE).transforms == ()
    paper = Procedure.paper(SIZE)
    assert (paper.early_exit, paper.evolution, paper.adam_start, paper.objective, paper.redraw_dead) == (
        False,
        "fixed_sigma",
        "mean",
        "after_relu",
        False,
    )
    assert Procedure.demo(SIZE, generator="pixel").transforms == (Robustness(),)


def test_the_written_out_adam_is_torch_optim_adam_row_by_row():
    from protoviz_core.engine.synthesis import _Adam

    torch.manual_seed(0)
    start, target = torch.randn(4, 3), torch.randn(4, 3)
    adam = _Adam(start, lr=0.1, stop_when_converged=False)
    reference = start.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([reference], lr=0.1)
    rows = torch.arange(4)
    for step in range(1, 6):
        x = adam.codes[rows].requires_grad_(True)
        score = -(x - target).square().sum(dim=1)
        (-score.sum()).backward()
        adam.step(step, rows, x, score.detach())
        optimizer.zero_grad()
        (reference - target).square().sum().backward()
        optimizer.step()
    torch.testing.assert_close(adam.codes, reference.detach())
    assert adam.running.all()
