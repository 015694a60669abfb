"""The one-command GPU check: the numbers that say whether a paper-scale run fits a GPU.

On one GPU (target: at most 8 minutes) it measures, and prints as one markdown table
ready for bench/RESULTS.md:

1. extraction at the paper's schedule (configs/paper.yaml: ``deepsim_fc6``, 20
   generations of 30 samples, 100 Adam steps) on all 960 channels of layer1-4 of one
   ResNet18 checkpoint at 96 px: prototypes/s and the peak GPU memory of the whole
   extraction (the highest of its shards' peaks: the engine resets the peak counter when
   it sizes each shard's passes), beside the free memory at the start. The engine
   sizes its passes to a fraction of the free memory, so the peak says how well that
   rule's estimate held, not how much the work needs. The checkpoint and the DeePSiM
   weights are random, written in their real formats and read by the extract stage's
   own code (``make_shard``); ``max_batch`` is left to the engine. Target >= 80
   prototypes/s on one H200 (the paper: about 3.4/s);
2. the train stage's images/s at 96 px, batch 256 (``train_learner``, the stage's own
   call, checkpoints included), and what that makes of an STL10 epoch of 100,000
   images (target < 30 s);
3. the distance stage's seconds per epoch at the paper's shape: 960 channels, 2
   repeats, the pixel space (27,648-d) and ten 2,048-d network spaces, both metrics,
   masked and plain. Measured as the stage runs it: its work items read two epochs'
   embedding files (in the embed stage's dtypes) and compute on the CPU (the stage takes
   no device).

Each row is printed as soon as it is measured, so a failure late in the run still
leaves the rows before it.

    python -m bench.ops.gpu_check                      # on the GPU machine
    python -m bench.ops.gpu_check --device cuda:1      # another GPU of the machine
    python -m bench.ops.gpu_check --device cpu --tiny  # seconds on a CPU: the test suite runs this
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import write_checkpoint, write_deepsim_weights
from protoviz_core.engine.synthesis import MEMORY_FRACTION
from protoviz_core.infra.work import KEY, epoch_file
from protoviz_core.measures.distance import distance_work
from protoviz_core.measures.embedding import stored_dtype
from protoviz_core.pipeline.config import TrainParams, load_params
from protoviz_core.prototypes.extraction import SYNTHESIS_OPTIONS, make_shard
from protoviz_core.training.loop import train_learner

ROOT = Path(__file__).resolve().parents[2]

LAYERS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
STL10_EPOCH = 100_000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def size(nbytes: int) -> str:
    """Bytes as GiB, or MiB below one GiB (the --tiny sizes)."""
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"


def check_extraction(folder: Path, device: torch.device, tiny: bool) -> dict:
    paper = load_params(ROOT / "configs" / "paper.yaml").extract
    image_size = 32 if tiny else 96
    options = paper.model_dump(include=set(SYNTHESIS_OPTIONS))
    options["generator_weights"] = str(write_deepsim_weights(folder / "upconvGAN_fc6.pt"))
    if tiny:
        options.update(cma_steps=2, cma_popsize=4, adam_steps=2)
    checkpoint = str(write_checkpoint(folder / "epoch_0000.pt", image_size))
    layers = {"layer1": 64, "layer4": 512} if tiny else LAYERS
    channels = 2 if tiny else None
    gpu = device.type == "cuda"
    free = torch.cuda.mem_get_info(device)[0] if gpu else 0
    peak = 0  # the highest shard peak: the engine resets the counter when it sizes a shard's passes
    made, started = 0, time.perf_counter()
    for seed, layer in enumerate(layers):
        if gpu:
            torch.cuda.reset_peak_memory_stats(device)
        shard = make_shard(
            checkpoint,
            layer,
            channels_per_layer=channels,
            seed=seed,
            options=options,
            image_size=image_size,
            max_batch=None,
            device=str(device),
        )
        made += len(shard["channels"])
        if not torch.isfinite(shard["activations"]).all():
            raise SystemExit(f"extraction: non-finite activations in {layer}")
        if gpu:
            _sync(device)
            peak = max(peak, torch.cuda.max_memory_allocated(device))
    _sync(device)
    seconds = time.perf_counter() - started
    peak = (
        (f"{size(peak)} of {size(free)} free at the start (passes sized to {MEMORY_FRACTION:.0%} of free)")
        if gpu
        else "n/a (CPU)"
    )
    schedule = f"{options['cma_steps']} x {options['cma_popsize']} evolution, {options['adam_steps']} Adam"
    return {
        "what": (
            f"extraction: {made} channels of {', '.join(layers)}, deepsim_fc6, {image_size} px, {schedule}"
        ),
        "value": f"{made / seconds:.2f} prototypes/s ({seconds:.1f} s); peak GPU memory {peak}",
        "target": "" if tiny else ">= 80 prototypes/s",
    }


def check_training(folder: Path, device: torch.device, tiny: bool) -> dict:
    image_size, batch = (24, 32) if tiny else (96, 256)
    count = batch * (2 if tiny else 40)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 3, image_size, image_size), dtype=np.uint8)
    config = TrainParams(epochs=1, batch_size=batch, num_workers=0 if tiny else 12, device=str(device))
    result = train_learner(
        images,
        config,
        aug="clrjit",
        seed=1,
        image_size=image_size,
        checkpoint_dir=folder / "checkpoints",
        state_path=folder / "state.pt",
        training_hash="gpu-check",
        device=device,
        log=lambda line: None,
    )
    per_s = result.images_per_s
    return {
        "what": f"train: {count} images, {image_size} px, batch {batch} (the stage's train_learner)",
        "value": f"{per_s:.0f} images/s; an STL10 epoch ({STL10_EPOCH:,} images) {STL10_EPOCH / per_s:.1f} s",
        "target": "" if tiny else "< 30 s per epoch",
    }


def check_distance(folder: Path, device: torch.device, tiny: bool) -> dict:
    layers = {"layer1": 8, "layer2": 8} if tiny else LAYERS
    dims = (
        {"pixel": 3 * 16 * 16, "net": 64}
        if tiny
        else {"pixel": 3 * 96 * 96, **{f"net{i}": 2048 for i in range(10)}}
    )
    generator = torch.Generator().manual_seed(0)
    for space, dim in dims.items():  # two epochs of embeddings in the embed stage's files
        (folder / "embeddings" / space).mkdir(parents=True)
        for epoch in (0, 1):
            torch.save(
                {
                    KEY: f"gpu-check {space} {epoch}",
                    **{
                        layer: {
                            "channels": torch.arange(c),
                            "repeats": torch.tensor([1, 2]),
                            **{
                                kind: torch.rand(2, c, dim, generator=generator).to(stored_dtype(space))
                                for kind in ("plain", "masked")
                            },
                        }
                        for layer, c in layers.items()
                    },
                },
                folder / "embeddings" / space / epoch_file(epoch),
            )
    started = time.perf_counter()
    rows = sum(
        len(distance_work(folder / "embeddings", space, [0, 1])[0].compute()["rows"]) for space in dims
    )
    seconds = time.perf_counter() - started
    return {
        "what": f"distance: one epoch, {sum(layers.values())} channels x 2 repeats, {len(dims)} spaces "
        f"({rows} values), read and computed as the stage does (CPU)",
        "value": f"{seconds:.2f} s per epoch",
        "target": "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="seconds-long sizes (the test suite's form)")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"\n{time.strftime('%Y-%m-%d')}, {name}, torch {torch.__version__}, "
        f"`python -m bench.ops.gpu_check{' --device ' + args.device if args.device != 'cuda' else ''}"
        f"{' --tiny' if args.tiny else ''}`\n"
    )
    print("| check | result | target |")
    print("|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        for check in (check_extraction, check_training, check_distance):
            scratch = Path(folder) / check.__name__
            scratch.mkdir()
            row = check(scratch, device, args.tiny)
            print(f"| {row['what']} | {row['value']} | {row['target']} |", flush=True)


if __name__ == "__main__":
    main()
