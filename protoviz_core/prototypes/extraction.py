"""Extraction: a prototype for every (checkpoint, layer, channel, repeat), shard by shard.

Paper Sec. 2.2 and 6.2: for each saved epoch, every channel of the chosen layers is
synthesised (:func:`~protoviz_core.engine.synthesis.synthesize`), twice with independent
seeds ("evolution repeats") to measure re-evolution consistency.

Randomness: each shard has its own seed (:func:`shard_seed`), a hash of the run's
training seed, ``extract.seed``, epoch, layer and repeat, and inside it every channel
has its own streams. So consecutive epochs draw independent noise, just as the two
repeats do, and rate of change (epoch vs next epoch) and re-evolution consistency
(repeat vs repeat) are measured alike. ``common_streams: starts`` gives every epoch of
a (layer, channel, repeat) the same start codes and independent search noise (the
paper authors' code: start seed 42 or 43 at every checkpoint). ``common_streams: true``
instead gives every epoch of a (layer, channel, repeat) the same random numbers (common
random numbers).

The unit of work is a shard (one epoch, layer and repeat), a work item of
:func:`protoviz_core.infra.work.run_work`: a shard is reused when its file is complete and
its identity (checkpoint, shard, seed, the settings that shape prototypes, code
version) matches, so a killed run redoes only what is missing, a changed
configuration redoes everything it changes, and a truncated shard is redone.
``max_batch`` and the device change memory and speed, not prototypes, and are not
part of the identity. Shards are computed in this process (``local``) or as Ray tasks
(``ray``) on an existing cluster or a local Ray instance; this process writes them.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from protoviz_core.engine.generators import (
    DEEPSIM_WEIGHTS_SOURCE,
    DecoderWeightsError,
    Generator,
    GeneratorWeightsError,
    MagnitudeSpectrumError,
    make_generator,
)
from protoviz_core.engine.rng import derive_seed
from protoviz_core.engine.synthesis import Procedure, synthesize
from protoviz_core.engine.units import channel_count, spaced_channels
from protoviz_core.infra.devices import visible_device
from protoviz_core.infra.hashing import file_hash
from protoviz_core.infra.work import Contents, WorkItem, identity
from protoviz_core.pipeline.config import ExtractParams
from protoviz_core.prototypes.store import ShardId, pack_shard
from protoviz_core.training.checkpoints import checkpoint_identity, load_backbone

# Bump when a change alters prototypes for the same settings (e.g. how streams are derived):
# it is part of every shard's identity, so old shards are redone, not reused.
SYNTHESIS_VERSION = 5  # 3: units maximised before their final ReLU; 4: activations of the 8-bit images;
# 5: no early stop of the gradient stage under random transforms

# The extract params that shape a prototype (Procedure.from_extract reads them); with the image
# size, the channel subset and the shard's seed they are everything that does.
SYNTHESIS_OPTIONS = (
    "generator",
    "generator_weights",
    "cma_steps",
    "cma_popsize",
    "cma_sigma",
    "adam_steps",
    "adam_lr",
    "early_exit",
    "evolution",
    "adam_start",
    "objective",
    "precision",
    "redraw_dead",
    "resize",
    "robustness",
)


def weights_identity(weights: str | Path | None, generator: str = "deepsim_fc6") -> str:
    """What a generator weights setting is, for the identity of results made with it:
    the file's SHA-256 (so replacing the file at the same path redoes the work), or the
    setting itself (``None``, ``"random"``) when there is no file.

    Raises:
        GeneratorWeightsError: a path that does not exist (MagnitudeSpectrumError for ``maco``'s,
            DecoderWeightsError for ``decoder``'s).
    """
    if weights is None or str(weights) == "random":
        return str(weights)
    path = Path(weights).expanduser()
    if generator == "maco" and not path.is_file():
        raise MagnitudeSpectrumError(f"{path}: magnitude spectrum not found; run dvc repro spectrum")
    if generator == "decoder" and not path.is_file():
        raise DecoderWeightsError(f"{path}: decoder prior not found; run dvc repro decoder")
    if not path.is_file():
        raise GeneratorWeightsError(f"{path}: DeePSiM weights not found; download {DEEPSIM_WEIGHTS_SOURCE}")
    return file_hash(path)


def shard_seed(run_seed: int, extract_seed: int, shard: ShardId, *, common_streams: bool = False) -> int:
    """The synthesis seed of one shard: independent for every (run seed, epoch, layer, repeat).

    With ``common_streams`` the epoch is left out, so every epoch of a (layer,
    repeat) shares its random numbers (channels still have their own streams).
    """
    epoch = "every epoch" if common_streams else shard.epoch
    return derive_seed("prototypes", run_seed, extract_seed, epoch, shard.layer, shard.repeat)


@functools.lru_cache(maxsize=1)
def _backbone_on(checkpoint: str, stamp: tuple[int, int], device: str) -> tuple[nn.Module, dict]:
    """The checkpoint's backbone on ``device``, loaded once for all shards of its epoch
    (consecutive in the plan); ``stamp`` (mtime, size) keys a rewritten file anew."""
    backbone, meta = load_backbone(checkpoint)
    return backbone.to(device), meta


@functools.lru_cache(maxsize=1)
def _generator_on(
    name: str,
    image_size: int,
    weights: str | None,
    stamp: tuple[int, int] | None,
    device: str,
    antialias: bool,
) -> Generator:
    """The image prior on ``device``, built (DeePSiM: read from disk) once per process;
    ``stamp`` (mtime, size) of the weights file keys a replaced file anew."""
    return make_generator(name, image_size, weights, antialias).to(device).eval()


def image_prior(
    name: str, weights: str | None, image_size: int, device: torch.device | str, resize: str = "antialias"
) -> Generator:
    """The generator ``name`` on ``device``, kept loaded for every shard this process makes.

    ``resize``: ``antialias`` or ``legacy`` (no antialiasing, the authors' code), for DeePSiM's resize.

    Raises:
        GeneratorWeightsError: DeePSiM weights missing, unreadable or of another network.
    """
    return _generator_on(name, image_size, weights, _file_stamp(weights), str(device), resize == "antialias")


def _file_stamp(path: str | None) -> tuple[int, int] | None:
    if path is None or path == "random" or not os.path.isfile(os.path.expanduser(path)):
        return None
    stat = os.stat(os.path.expanduser(path))
    return stat.st_mtime_ns, stat.st_size


def make_shard(
    checkpoint: str,
    layer: str,
    *,
    channels_per_layer: int | None,
    seed: int,
    options: dict,
    image_size: int,
    max_batch: int | None,
    start_seed: int | None = None,
    device: str | None,
    image_format: str = "raw",
) -> Contents:
    """Synthesise the prototypes of one layer of one checkpoint: a shard's contents (:func:`pack_shard`).

    ``options``: the extract params of :data:`SYNTHESIS_OPTIONS` and ``read_unit``; with
    ``max_batch`` and the checkpoint's normalisation they are the search's
    :class:`~protoviz_core.engine.synthesis.Procedure` (``Procedure.from_extract``).
    ``device`` None: the device this worker was given (:func:`~protoviz_core.infra.devices.visible_device`).
    The backbone and the generator stay loaded between calls of one process.
    """
    device = torch.device(device) if device is not None else visible_device()
    stat = os.stat(checkpoint)
    backbone, meta = _backbone_on(checkpoint, (stat.st_mtime_ns, stat.st_size), str(device))
    procedure = Procedure.from_extract(options, image_size, max_batch=max_batch, normalize=meta["normalize"])
    # The generator it names, loaded once for every shard of this process.
    prior = image_prior(
        procedure.generator, procedure.generator_weights, image_size, device, procedure.resize
    )
    procedure = dataclasses.replace(procedure, generator=prior)
    channels = spaced_channels(channel_count(backbone, layer, image_size), channels_per_layer)
    prototypes = synthesize(
        backbone, layer, channels, procedure, seed=seed, start_seed=start_seed, device=device
    )
    return pack_shard(prototypes, image_format)


def shard_work(
    checkpoints: dict[int, Path],
    settings: ExtractParams,
    *,
    run_seed: int,
    image_size: int,
    device: torch.device | None,
    read_unit: str = "top_left",
) -> dict[ShardId, WorkItem]:
    """One work item per (epoch of ``checkpoints``, layer, repeat), in that order.

    Args:
        checkpoints: {epoch: path} of the epochs to extract.
        settings: the ``extract`` section of params.yaml.
        run_seed: the training seed of the run (params ``seed``).
        read_unit: the unit of each channel's map that is maximised (params ``read_unit``).
        device: resolved by the stage; None for Ray tasks, which use the GPU Ray gives each
            of them (or the CPU).
    """
    options = settings.model_dump(include=set(SYNTHESIS_OPTIONS))
    options["read_unit"] = read_unit
    weights = (
        weights_identity(settings.generator_weights, settings.generator)
        if settings.generator in ("deepsim_fc6", "maco", "decoder")
        else None
    )
    # Options at the values they had before they existed leave the identity as it was.
    shaping = {
        k: v for k, v in options.items() if (k, v) not in (("robustness", False), ("read_unit", "top_left"))
    }
    work = {}
    for epoch, path in checkpoints.items():
        made_from = checkpoint_identity(path)
        for layer in settings.layers:
            for repeat in range(1, settings.repeats + 1):
                shard = ShardId(epoch, layer, repeat)
                seed = shard_seed(
                    run_seed, settings.seed, shard, common_streams=settings.common_streams is True
                )
                start_seed = (
                    shard_seed(run_seed, settings.seed, shard, common_streams=True)
                    if settings.common_streams == "starts"
                    else None
                )
                key = identity(
                    "prototypes",
                    made_from,
                    shard.name,
                    seed,
                    start_seed,
                    shaping,
                    weights,
                    image_size,
                    settings.channels_per_layer,
                    SYNTHESIS_VERSION,
                )
                work[shard] = WorkItem(
                    shard.name,
                    key,
                    functools.partial(
                        make_shard,
                        str(Path(path).resolve()),
                        layer,
                        channels_per_layer=settings.channels_per_layer,
                        seed=seed,
                        start_seed=start_seed,
                        options=options,
                        image_size=image_size,
                        max_batch=settings.max_batch,
                        device=None if device is None else str(device),
                        image_format=settings.shard_format,
                    ),
                )
    return work


def ray_executor(address: str | None, *, gpus: bool = True) -> Callable:
    """A :func:`~protoviz_core.infra.work.run_work` executor computing each item as a Ray task.

    Tasks run on the cluster at ``address``, or on a local instance started here when
    None, one GPU each where the cluster has GPUs and ``gpus`` is True (False: on the CPU,
    reserving no GPU: for ``device: cpu``). Workers read checkpoints by path (on
    a multi-machine cluster the repository must be on a shared file system) and return
    the shard's contents; this process writes them.
    """

    def execute(items: Sequence[WorkItem]) -> Iterator[tuple[WorkItem, Contents]]:
        if not items:
            return
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        try:
            per_task = 1 if gpus and ray.cluster_resources().get("GPU", 0) >= 1 else 0
            remote = ray.remote(num_gpus=per_task, num_cpus=1, max_retries=2)(_compute)
            waiting = {remote.remote(item.compute): item for item in items}
            while waiting:
                (done,), _ = ray.wait(list(waiting), num_returns=1)
                yield waiting.pop(done), ray.get(done)
        finally:
            if started_here:
                ray.shutdown()

    return execute


def _compute(compute) -> Contents:
    return compute()
