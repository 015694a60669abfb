"""Extraction on a micro run: shards, resume, invalidation, independent streams, Ray == local."""

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from protoviz_core.infra.work import pending, run_work
from protoviz_core.pipeline.config import ExtractParams
from protoviz_core.prototypes.extraction import ray_executor, shard_work
from protoviz_core.prototypes.store import (
    SHARDS_DIR,
    ShardId,
    build_index,
    open_prototypes,
    read_shard,
    shard_path,
)
from tests.helpers import TINY_IMAGE_SIZE

SETTINGS = ExtractParams(
    layers=["layer1", "layer2"],
    channels_per_layer=3,
    repeats=2,
    cma_steps=2,
    cma_popsize=6,
    cma_sigma=1.0,
    adam_steps=3,
    adam_lr=0.05,
    device="cpu",
)


@pytest.fixture(scope="module")
def checkpoints(trained_checkpoints):
    return {epoch: trained_checkpoints[epoch] for epoch in (0, 1)}


def _work(checkpoints, settings=SETTINGS, run_seed=1):
    return shard_work(
        checkpoints, settings, run_seed=run_seed, image_size=TINY_IMAGE_SIZE, device=torch.device("cpu")
    )


def _extract(store, work, **kwargs):
    done = []
    run_work(
        list(work.values()),
        store / SHARDS_DIR,
        log=lambda m: None,
        on_done=lambda item, reused: done.extend([] if reused else [item.name]),
        **kwargs,
    )
    return done, build_index(store, list(work), aug="clrjit", seed=1)


def _stamps(store):
    return {p.name: p.stat().st_mtime_ns for p in (store / SHARDS_DIR).iterdir()}


def test_micro_run_writes_expected_rows_and_shards(tmp_path, checkpoints):
    done, index = _extract(tmp_path, _work(checkpoints))
    assert len(done) == 2 * 2 * 2  # epochs x layers x repeats
    assert len(index) == 8 * 3 and sorted(p.name for p in (tmp_path / "shards").iterdir()) == sorted(
        f"e{e:04d}-{layer}-r{r}.pt" for e in (0, 1) for layer in ("layer1", "layer2") for r in (1, 2)
    )
    assert sorted(index[index.layer == "layer1"].channel.unique()) == [0, 32, 63]  # evenly spaced of 64
    store = open_prototypes(tmp_path)
    rows = store.select(epoch=1, layer="layer2", channel=[0, 127])
    assert len(rows) == 4 and store.images(rows).shape == (4, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    repeats = store.images(store.select(epoch=1, layer="layer2", channel=0))
    assert not torch.equal(repeats[0], repeats[1])  # independent repeats


def test_resume_redoes_only_missing_shards_and_matches_an_uninterrupted_run(tmp_path, checkpoints):
    work = _work(checkpoints)
    _, straight = _extract(tmp_path / "straight", work)
    first_three = dict(list(work.items())[:3])
    _extract(tmp_path / "resumed", first_three)  # a run killed after three shards
    before = _stamps(tmp_path / "resumed")
    done, resumed = _extract(tmp_path / "resumed", work)
    assert len(done) == len(work) - 3
    assert {k: v for k, v in _stamps(tmp_path / "resumed").items() if k in before} == before
    pd.testing.assert_frame_equal(resumed, straight)
    a, b = open_prototypes(tmp_path / "straight"), open_prototypes(tmp_path / "resumed")
    assert torch.equal(a.images(a.index), b.images(b.index))


def test_identity_holds_what_shapes_prototypes_and_nothing_else(tmp_path, checkpoints):
    work = _work(checkpoints)
    items = list(work.values())
    _extract(tmp_path, work)
    assert pending(tmp_path / SHARDS_DIR, items) == []
    # Memory budget and device change speed, not prototypes: nothing is redone.
    budget = _work(checkpoints, SETTINGS.model_copy(update={"max_batch": 5, "device": "auto"}))
    assert pending(tmp_path / SHARDS_DIR, list(budget.values())) == []
    changed = _work(checkpoints, SETTINGS.model_copy(update={"adam_steps": 4}))
    assert len(pending(tmp_path / SHARDS_DIR, list(changed.values()))) == len(changed)
    path = shard_path(tmp_path, ShardId(0, "layer1", 2))
    path.write_bytes(path.read_bytes()[:100])
    assert [item.name for item in pending(tmp_path / SHARDS_DIR, items)] == [path.name]


def test_replacing_the_generator_weights_file_redoes_the_shards(tmp_path, checkpoints):
    from protoviz_core.engine.generators import DeePSiMGenerator

    weights = tmp_path / "upconvGAN_fc6.pt"
    torch.manual_seed(0)
    torch.save(DeePSiMGenerator.random(TINY_IMAGE_SIZE).G.state_dict(), weights)
    settings = SETTINGS.model_copy(update={"generator": "deepsim_fc6", "generator_weights": str(weights)})
    before = {shard: item.key for shard, item in _work(checkpoints, settings).items()}
    torch.manual_seed(1)
    torch.save(DeePSiMGenerator.random(TINY_IMAGE_SIZE).G.state_dict(), weights)  # same path, other weights
    after = {shard: item.key for shard, item in _work(checkpoints, settings).items()}
    assert all(before[shard] != after[shard] for shard in before)


def test_a_process_loads_each_checkpoint_and_the_generator_once(tmp_path, checkpoints, monkeypatch):
    import protoviz_core.prototypes.extraction as extraction

    loads = {"backbone": 0, "generator": 0}
    real_backbone, real_generator = extraction.load_backbone, extraction.make_generator
    monkeypatch.setattr(
        extraction,
        "load_backbone",
        lambda *a: loads.update(backbone=loads["backbone"] + 1) or real_backbone(*a),
    )
    monkeypatch.setattr(
        extraction,
        "make_generator",
        lambda *a: loads.update(generator=loads["generator"] + 1) or real_generator(*a),
    )
    extraction._backbone_on.cache_clear()
    extraction._generator_on.cache_clear()
    done, _ = _extract(tmp_path, _work(checkpoints))
    assert len(done) == 8 and loads == {"backbone": 2, "generator": 1}  # 2 epochs x 2 layers x 2 repeats


def test_max_batch_changes_memory_not_prototypes(tmp_path, checkpoints):
    one = {ShardId(1, "layer1", 1): _work(checkpoints)[ShardId(1, "layer1", 1)]}
    small = _work(checkpoints, SETTINGS.model_copy(update={"max_batch": 4}))
    _extract(tmp_path / "all", one)
    _extract(tmp_path / "small", {ShardId(1, "layer1", 1): small[ShardId(1, "layer1", 1)]})
    a, b = open_prototypes(tmp_path / "all"), open_prototypes(tmp_path / "small")
    assert torch.allclose(a.images(a.index).float(), b.images(b.index).float(), atol=2)


def test_dropped_layer_removes_its_shards(tmp_path, checkpoints):
    _extract(tmp_path, _work(checkpoints))
    _, index = _extract(tmp_path, _work(checkpoints, SETTINGS.model_copy(update={"layers": ["layer1"]})))
    assert set(index.layer) == {"layer1"} and all("layer2" not in p for p in _stamps(tmp_path))


def test_every_epoch_layer_and_repeat_draws_independent_noise(tmp_path, checkpoints):
    work = _work(checkpoints)  # 2 epochs x 2 layers x 2 repeats
    seeds = {shard: item.compute.keywords["seed"] for shard, item in work.items()}
    assert len(set(seeds.values())) == len(work)
    other_run = _work(checkpoints, run_seed=2)
    assert not set(seeds.values()) & {item.compute.keywords["seed"] for item in other_run.values()}
    assert not {i.key for i in work.values()} & {
        i.key for i in other_run.values()
    }  # cached shards not reused
    # The same channel at consecutive epochs starts from unrelated codes (no common random numbers).
    no_search = _work(checkpoints, SETTINGS.model_copy(update={"cma_steps": 0, "adam_steps": 0}))
    layer1_r1 = {
        shard: item for shard, item in no_search.items() if shard.layer == "layer1" and shard.repeat == 1
    }
    _extract(tmp_path, layer1_r1)
    starts = [read_shard(shard_path(tmp_path, shard))["latents"].float() for shard in layer1_r1]
    cosine = torch.nn.functional.cosine_similarity(starts[0], starts[1], dim=1)  # (3,) per channel
    assert cosine.abs().max() < 0.1


def test_common_streams_share_noise_across_epochs_only(checkpoints):
    work = _work(checkpoints, SETTINGS.model_copy(update={"common_streams": True}))
    seed = {(s.epoch, s.layer, s.repeat): item.compute.keywords["seed"] for s, item in work.items()}
    assert seed[(0, "layer1", 1)] == seed[(1, "layer1", 1)]
    assert len({seed[(0, layer, r)] for layer in ("layer1", "layer2") for r in (1, 2)}) == 4
    # Another result
    assert {i.key for i in work.values()}.isdisjoint(i.key for i in _work(checkpoints).values())
    # starts (the authors' code): the same start codes at every epoch, the search's noise its own.
    starts = _work(checkpoints, SETTINGS.model_copy(update={"common_streams": "starts"}))
    keywords = {(s.epoch, s.layer, s.repeat): item.compute.keywords for s, item in starts.items()}
    assert keywords[(0, "layer1", 1)]["start_seed"] == keywords[(1, "layer1", 1)]["start_seed"] is not None
    assert keywords[(0, "layer1", 1)]["seed"] != keywords[(1, "layer1", 1)]["seed"]
    assert keywords[(0, "layer1", 1)]["start_seed"] != keywords[(0, "layer1", 2)]["start_seed"]


def _ray_task_processes() -> list[int]:
    """PIDs of Ray workers running a shard now (Ray titles a busy worker ``ray::<function>``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::_compute"):
                found.append(int(entry.name))
        except OSError:  # the process ended meanwhile
            continue
    return found


@pytest.mark.slow
def test_ray_executor_matches_local_even_when_a_worker_is_killed_mid_shard(tmp_path, checkpoints):
    """kill -9 on a ``ray::`` worker computing a shard: Ray runs the task again (max_retries), and
    the store is the local executor's, byte for byte."""
    work = _work(checkpoints, SETTINGS.model_copy(update={"layers": ["layer1"], "adam_steps": 30}))
    _, local = _extract(tmp_path / "local", work)
    killed = []

    def kill_one_worker() -> None:
        deadline = time.time() + 120
        while not killed and time.time() < deadline:
            for pid in _ray_task_processes()[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    try:
        _, remote = _extract(tmp_path / "ray", work, executor=ray_executor(None))
    finally:
        killer.join()
    assert killed, "no Ray worker was caught computing a shard"
    pd.testing.assert_frame_equal(local, remote)
    a, b = open_prototypes(tmp_path / "local"), open_prototypes(tmp_path / "ray")
    assert torch.equal(a.images(a.index), b.images(b.index))


def test_ray_tasks_reserve_a_gpu_only_when_the_device_may_be_one(monkeypatch):
    """`executor: ray` with `device: cpu` must not hold the cluster's GPUs."""
    import sys
    import types

    from protoviz_core.infra.work import WorkItem

    asked = []
    fake = types.SimpleNamespace(
        is_initialized=lambda: True,
        cluster_resources=lambda: {"GPU": 1.0, "CPU": 2.0},
        remote=lambda **resources: (
            asked.append(resources["num_gpus"])
            or (lambda function: types.SimpleNamespace(remote=lambda compute: compute))
        ),
        wait=lambda waiting, num_returns: ([waiting[0]], waiting[1:]),
        get=lambda done: done(),
    )
    monkeypatch.setitem(sys.modules, "ray", fake)
    item = WorkItem("a.pt", "k", lambda: {"value": 1})
    for gpus in (False, True):
        assert [contents for _, contents in ray_executor(None, gpus=gpus)([item])] == [{"value": 1}]
    assert asked == [0, 1]


# A value other than ExtractParams' default for every option that shapes a prototype.
_OTHER_VALUES = {
    "generator": "pixel",
    "generator_weights": "other.pt",
    "cma_steps": 3,
    "cma_popsize": 5,
    "cma_sigma": 0.5,
    "adam_steps": 7,
    "adam_lr": 0.2,
    "early_exit": False,
    "evolution": "fixed_sigma",
    "adam_start": "mean",
    "objective": "after_relu",
    "precision": "float32",
    "redraw_dead": False,
    "resize": "legacy",
    "robustness": True,
}


def test_every_option_in_a_shards_identity_reaches_the_procedure():
    """SYNTHESIS_OPTIONS are in a shard's identity; each must change what Procedure.from_extract makes
    (an option the procedure ignored would redo shards for nothing, one missing from the identity
    would reuse stale ones)."""
    from protoviz_core.engine.synthesis import Procedure
    from protoviz_core.prototypes.extraction import SYNTHESIS_OPTIONS

    assert set(_OTHER_VALUES) == set(SYNTHESIS_OPTIONS)
    options = ExtractParams().model_dump(include=set(SYNTHESIS_OPTIONS))
    base = Procedure.from_extract(options, TINY_IMAGE_SIZE)
    for key, value in _OTHER_VALUES.items():
        assert Procedure.from_extract({**options, key: value}, TINY_IMAGE_SIZE) != base, key
    assert Procedure.from_extract({**options, "read_unit": "centred"}, TINY_IMAGE_SIZE) != base


def test_the_paper_and_demo_procedures_are_those_of_their_params_files():
    import yaml

    from protoviz_core.engine.synthesis import Procedure

    root = Path(__file__).resolve().parents[2]
    for name, made in (("configs/paper.yaml", Procedure.paper), ("params.yaml", Procedure.demo)):
        params = yaml.safe_load((root / name).read_text())
        size = params["data"]["image_size"]
        assert Procedure.from_extract(params["extract"], size) == made(size), name
