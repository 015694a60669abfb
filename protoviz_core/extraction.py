"""Extraction: a prototype for every (checkpoint, layer, channel, repeat), shard by shard.

Paper Sec. 2.2 and 6.2: for each saved epoch, every channel of the chosen layers is
synthesised (:func:`~protoviz_core.synthesis.synthesize`), twice with independent
seeds ("evolution repeats") to measure re-evolution consistency.

Randomness: each shard has its own seed (:func:`shard_seed`), a hash of the run's
training seed, ``extract.seed``, epoch, layer and repeat, and inside it every channel
has its own streams. So consecutive epochs draw independent noise, just as the two
repeats do, and rate of change (epoch vs next epoch) and re-evolution consistency
(repeat vs repeat) are measured alike. ``common_streams`` instead gives every epoch
of a (layer, channel, repeat) the same random numbers (common random numbers).

The unit of work is a shard (one epoch, layer and repeat). A shard is skipped when
its file is complete and was made by the same configuration, so a killed run redoes
only what is missing, a changed configuration redoes everything it changes, and a
truncated shard is redone. Shards run in this process (``local``) or as Ray tasks
(``ray``) on an existing cluster or a local Ray instance; both write the same files.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from protoviz_core.checkpoints import load_backbone
from protoviz_core.outputs import remove_unplanned
from protoviz_core.rfield import spaced_channels
from protoviz_core.rng import derive_seed
from protoviz_core.store import SHARDS_DIR, ShardId, shard_is_complete, write_shard
from protoviz_core.synthesis import synthesize
from protoviz_core.units import channel_count

# Bump when a change alters prototypes for the same settings (e.g. how streams are derived):
# it is part of every shard's identity, so old shards are redone, not reused.
SYNTHESIS_VERSION = 2


@dataclass(frozen=True)
class SynthesisSettings:
    """What :func:`synthesize` is called with, besides the model, layer and channels."""

    generator: str
    generator_weights: str | None
    image_size: int
    cma_steps: int
    cma_popsize: int
    cma_sigma: float
    adam_steps: int
    adam_lr: float
    max_batch: int | None
    device: str


@dataclass(frozen=True)
class ShardTask:
    shard: ShardId
    checkpoint: str  # path of the epoch's checkpoint
    key: str  # identity of the configuration that makes this shard
    seed: int  # this shard's seed (shard_seed)
    channels_per_layer: int | None  # evenly spaced subset; None = all channels
    settings: SynthesisSettings


def shard_seed(run_seed: int, extract_seed: int, shard: ShardId, *, common_streams: bool = False) -> int:
    """The synthesis seed of one shard: independent for every (run seed, epoch, layer, repeat).

    With ``common_streams`` the epoch is left out, so every epoch of a (layer,
    repeat) shares its random numbers (channels still have their own streams).
    """
    epoch = "every epoch" if common_streams else shard.epoch
    return derive_seed("prototypes", run_seed, extract_seed, epoch, shard.layer, shard.repeat)


def plan(
    checkpoints: dict[int, Path],
    epochs: Sequence[int],
    layers: Sequence[str],
    repeats: int,
    *,
    run_seed: int,
    seed: int,
    training_hash: str,
    channels_per_layer: int | None,
    settings: SynthesisSettings,
    common_streams: bool = False,
) -> list[ShardTask]:
    """One task per (epoch, layer, repeat), keyed by everything that shapes its result.

    Args:
        run_seed: the training seed of the run (params ``seed``).
        seed: ``extract.seed``.
        common_streams: see :func:`shard_seed`.
    """
    config = json.dumps({"settings": asdict(settings), "channels": channels_per_layer}, sort_keys=True)
    tasks = []
    for epoch in epochs:
        for layer in layers:
            for repeat in range(1, repeats + 1):
                shard = ShardId(epoch, layer, repeat)
                synthesis_seed = shard_seed(run_seed, seed, shard, common_streams=common_streams)
                identity = f"{training_hash}:{epoch}:{layer}:{repeat}:{synthesis_seed}:{config}:{SYNTHESIS_VERSION}"
                tasks.append(ShardTask(
                    shard=shard, checkpoint=str(checkpoints[epoch]),
                    key=hashlib.sha256(identity.encode()).hexdigest()[:24], seed=synthesis_seed,
                    channels_per_layer=channels_per_layer, settings=settings,
                ))
    return tasks


def run_shard(task: ShardTask, store: str) -> dict:
    """Synthesise one shard's prototypes and write it. Returns its summary statistics."""
    started = time.perf_counter()
    backbone, meta = load_backbone(task.checkpoint)
    s = task.settings
    device = torch.device(s.device)
    channels = spaced_channels(channel_count(backbone.to(device), task.shard.layer, s.image_size, device),
                               task.channels_per_layer)
    prototypes = synthesize(
        backbone, task.shard.layer, channels, generator=s.generator, generator_weights=s.generator_weights,
        image_size=s.image_size, cma_steps=s.cma_steps, cma_popsize=s.cma_popsize, cma_sigma=s.cma_sigma,
        adam_steps=s.adam_steps, adam_lr=s.adam_lr, seed=task.seed, device=device, max_batch=s.max_batch,
        normalize=meta["normalize"],
    )
    write_shard(store, task.shard, task.key, prototypes)
    return {
        "shard": task.shard.name, "epoch": task.shard.epoch, "layer": task.shard.layer,
        "repeat": task.shard.repeat, "prototypes": len(channels), "seconds": time.perf_counter() - started,
        "mean_activation": prototypes.activations.mean().item(),
        "dead_fraction": prototypes.dead.float().mean().item(), "redrawn": int(prototypes.redrawn.sum()),
    }


def remove_stale_shards(store: str | Path, tasks: Sequence[ShardTask], log: Callable[[str], None]) -> None:
    """Delete shard files no task of this plan will produce (other epochs, layers or repeats)."""
    remove_unplanned(Path(store) / SHARDS_DIR, (task.shard.name for task in tasks), log)


def pending(store: str | Path, tasks: Sequence[ShardTask]) -> list[ShardTask]:
    """Tasks whose shard is missing, unreadable or made by another configuration."""
    return [task for task in tasks if not shard_is_complete(store, task.shard, task.key)]


def execute(
    tasks: Sequence[ShardTask],
    store: str | Path,
    *,
    executor: str = "local",
    ray_address: str | None = None,
    on_done: Callable[[dict], None] = lambda summary: None,
) -> list[dict]:
    """Run ``tasks`` and write their shards; ``on_done(summary)`` after each.

    ``ray``: every shard is a Ray task (one GPU each where the cluster has GPUs) on
    the cluster at ``ray_address``, or on a local instance started here when None.
    Workers read checkpoints and write shards by path, so on a multi-machine cluster
    the repository must be on a shared file system.
    """
    store = str(Path(store).resolve())
    Path(store, SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    if executor == "local":
        summaries = []
        for task in tasks:
            summaries.append(run_shard(task, store))
            on_done(summaries[-1])
        return summaries
    if executor != "ray":
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    return _execute_on_ray(tasks, store, ray_address, on_done)


def _execute_on_ray(tasks, store, ray_address, on_done) -> list[dict]:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=ray_address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        remote = ray.remote(num_gpus=gpus, num_cpus=1, max_retries=2)(run_shard)
        # Shards are checkpoints x layers x repeats, resolved paths: tasks are small to ship.
        waiting = [remote.remote(task, store) for task in tasks]
        summaries = []
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1)
            summaries.append(ray.get(done[0]))
            on_done(summaries[-1])
        return sorted(summaries, key=lambda s: (s["epoch"], s["layer"], s["repeat"]))
    finally:
        if started_here:
            ray.shutdown()

