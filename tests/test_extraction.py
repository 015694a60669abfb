"""Extraction on a micro run: shards, resume, invalidation, corruption, Ray == local."""

import pandas as pd
import pytest
import torch

from protoviz_core.checkpoints import choose_epochs, list_checkpoints
from protoviz_core.config import TrainParams
from protoviz_core.extraction import (
    ShardTask, SynthesisSettings, execute, pending, plan, remove_stale_shards,
)
from protoviz_core.store import build_index, open_prototypes, shard_path
from protoviz_core.training import train_simclr
from tests.helpers import TINY_IMAGE_SIZE

SETTINGS = SynthesisSettings(generator="fourier", generator_weights=None, image_size=TINY_IMAGE_SIZE,
                             cma_steps=2, cma_popsize=6, cma_sigma=1.0, adam_steps=3, adam_lr=0.05,
                             max_batch=None, device="cpu")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from protoviz_core.synthetic import generate_images
    import numpy as np

    folder = tmp_path_factory.mktemp("train")
    rng = np.random.default_rng(0)
    images = generate_images(rng.integers(0, 10, 64), TINY_IMAGE_SIZE, rng)
    train_simclr(images, TrainParams(epochs=1, batch_size=32, num_workers=0, device="cpu"), aug="clrjit",
                 seed=1, image_size=TINY_IMAGE_SIZE, checkpoint_dir=folder / "ckpt", state_path=folder / "s.pt",
                 training_hash="t", log=lambda m: None)
    return list_checkpoints(folder / "ckpt")


def _tasks(checkpoints, settings=SETTINGS, layers=("layer1", "layer2")):
    return plan(checkpoints, sorted(checkpoints), list(layers), 2, run_seed=1, seed=0, training_hash="t",
                channels_per_layer=3, settings=settings)


def _extract(store, tasks, **kwargs):
    remove_stale_shards(store, tasks, lambda m: None)
    done = execute(pending(store, tasks), store, **kwargs)
    index = build_index(store, [t.shard for t in tasks], aug="clrjit", seed=1)
    return done, index


def _stamps(store):
    return {p.name: p.stat().st_mtime_ns for p in (store / "shards").iterdir()}


def test_micro_run_writes_expected_rows_and_shards(tmp_path, checkpoints):
    done, index = _extract(tmp_path, _tasks(checkpoints))
    assert len(done) == 2 * 2 * 2  # epochs x layers x repeats
    assert len(index) == 8 * 3 and sorted(p.name for p in (tmp_path / "shards").iterdir()) == sorted(
        f"e{e:04d}-{layer}-r{r}.pt" for e in (0, 1) for layer in ("layer1", "layer2") for r in (1, 2))
    assert sorted(index[index.layer == "layer1"].channel.unique()) == [0, 32, 63]  # evenly spaced of 64
    store = open_prototypes(tmp_path)
    rows = store.select(epoch=1, layer="layer2", channel=[0, 127])
    assert len(rows) == 4 and store.images(rows).shape == (4, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    repeats = store.images(store.select(epoch=1, layer="layer2", channel=0))
    assert not torch.equal(repeats[0], repeats[1])  # independent repeats


def test_resume_redoes_only_missing_shards_and_matches_an_uninterrupted_run(tmp_path, checkpoints):
    tasks = _tasks(checkpoints)
    _, straight = _extract(tmp_path / "straight", tasks)
    execute(tasks[:3], tmp_path / "resumed")  # a run killed after three shards
    before = _stamps(tmp_path / "resumed")
    done, resumed = _extract(tmp_path / "resumed", tasks)
    assert len(done) == len(tasks) - 3
    assert {k: v for k, v in _stamps(tmp_path / "resumed").items() if k in before} == before
    pd.testing.assert_frame_equal(resumed, straight)
    a, b = open_prototypes(tmp_path / "straight"), open_prototypes(tmp_path / "resumed")
    assert torch.equal(a.images(a.index), b.images(b.index))


def test_changed_param_invalidates_and_truncated_shard_is_redone(tmp_path, checkpoints):
    tasks = _tasks(checkpoints)
    _extract(tmp_path, tasks)
    assert pending(tmp_path, tasks) == []
    changed = _tasks(checkpoints, SynthesisSettings(**{**SETTINGS.__dict__, "adam_steps": 4}))
    assert len(pending(tmp_path, changed)) == len(changed)
    path = shard_path(tmp_path, tasks[2].shard)
    path.write_bytes(path.read_bytes()[:100])
    assert pending(tmp_path, tasks) == [tasks[2]]


def test_dropped_layer_removes_its_shards(tmp_path, checkpoints):
    _extract(tmp_path, _tasks(checkpoints))
    _, index = _extract(tmp_path, _tasks(checkpoints, layers=("layer1",)))
    assert set(index.layer) == {"layer1"} and all("layer2" not in p for p in _stamps(tmp_path))


def test_every_epoch_layer_and_repeat_draws_independent_noise(tmp_path, checkpoints):
    tasks = _tasks(checkpoints)  # 2 epochs x 2 layers x 2 repeats
    assert len({task.seed for task in tasks}) == len(tasks)
    other_run = plan(checkpoints, sorted(checkpoints), ["layer1", "layer2"], 2, run_seed=2, seed=0,
                     training_hash="t", channels_per_layer=3, settings=SETTINGS)
    assert not {task.seed for task in tasks} & {task.seed for task in other_run}
    assert not {task.key for task in tasks} & {task.key for task in other_run}  # cached shards are not reused
    # The same channel at consecutive epochs starts from unrelated codes (no common random numbers).
    layer1_r1 = [task for task in tasks if task.shard.layer == "layer1" and task.shard.repeat == 1]
    no_search = SynthesisSettings(**{**SETTINGS.__dict__, "cma_steps": 0, "adam_steps": 0})
    starts = []
    for task in layer1_r1:
        execute([ShardTask(**{**task.__dict__, "settings": no_search})], tmp_path)
        starts.append(_shard_latents(tmp_path, task.shard))
    cosine = torch.nn.functional.cosine_similarity(starts[0], starts[1], dim=1)  # (3,) per channel
    assert cosine.abs().max() < 0.1


def test_common_streams_share_noise_across_epochs_only(checkpoints):
    tasks = plan(checkpoints, sorted(checkpoints), ["layer1", "layer2"], 2, run_seed=1, seed=0, training_hash="t",
                 channels_per_layer=3, settings=SETTINGS, common_streams=True)
    by_shard = {(t.shard.epoch, t.shard.layer, t.shard.repeat): t.seed for t in tasks}
    assert by_shard[(0, "layer1", 1)] == by_shard[(1, "layer1", 1)]
    assert len({by_shard[(0, layer, r)] for layer in ("layer1", "layer2") for r in (1, 2)}) == 4
    assert {t.key for t in tasks}.isdisjoint(t.key for t in _tasks(checkpoints))  # a different result


def _shard_latents(store, shard) -> torch.Tensor:
    """(C, d) latents of one shard, channels in ascending order."""
    from protoviz_core.store import read_shard

    return read_shard(shard_path(store, shard))["latents"].float()


def test_listed_epochs_must_exist():
    assert choose_epochs([0, 1, 2, 3], "all") == [0, 1, 2, 3]
    assert choose_epochs([0, 1, 2, 3], 2) == [0, 2, 3]
    with pytest.raises(ValueError, match=r"extract.epochs: epochs \[7\] are not available"):
        choose_epochs([0, 1, 2, 3], [1, 7])


@pytest.mark.slow
def test_ray_executor_matches_local(tmp_path, checkpoints):
    tasks = _tasks(checkpoints, layers=("layer1",))
    _, local = _extract(tmp_path / "local", tasks)
    _, remote = _extract(tmp_path / "ray", tasks, executor="ray")
    pd.testing.assert_frame_equal(local, remote.assign(shard=remote.shard))
    a, b = open_prototypes(tmp_path / "local"), open_prototypes(tmp_path / "ray")
    assert torch.equal(a.images(a.index), b.images(b.index))
