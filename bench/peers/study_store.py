"""Benchmark: the prototype store at the paper's full study, 1,163,520 prototypes, in DVC.

The paper's study is 6 runs (2 conditions x 3 seeds) x 101 epochs x 960 channels of
layer1-4 x 2 repeats = 1,163,520 prototypes at 96 px. This writes it as it lives in a
repository: one protoviz store per run (``study/<run>/``, shards + index.parquet),
each tracked by its own ``.dvc`` file, and measures in one run:

1. the whole study, raw shards: bytes, write time, ``dvc add``, ``dvc status`` (target
   under 5 s) and reading one unit across all 101 epochs and both repeats (target
   under 1 s), from a freshly opened store;
2. one run's store (193,920 prototypes), raw and ``png`` shards side by side: bytes,
   write time (PNG encoding included), ``dvc push`` and ``dvc pull`` (into a fresh
   clone) to a local directory remote and to an S3 API server on 127.0.0.1 (moto,
   the server DVC's own tests use), and the unit read. Pushing the whole study needs
   a second copy of it on disk; the run's numbers are the per-run cost, scaled by 6.

DVC's cache is set to hardlinks, so ``dvc add`` does not copy the study (the store is
written once, by atomic renames, and never edited in place, which is what hardlinks need).
Images are smooth random fields (see store_scale.py): PNG saves more on them than on
noisy prototypes.

    python -m bench.peers.study_store --workdir /work/study-bench          # full scale: ~33 GB, ~30 min
    python -m bench.peers.study_store --runs 2 --epochs 3 --workdir /tmp/sb  # a quick check of the script
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from bench.common import LAYER_CHANNELS, size_on_disk, smooth_images, timed
from protoviz_core.engine.synthesis import Prototypes
from protoviz_core.prototypes.store import ShardId, build_index, open_prototypes, write_shard
from tests.helpers import s3_server

RUNS = [f"{aug}-seed{seed}" for aug in ("clrjit", "keepclr") for seed in (1, 2, 3)]
BIN = Path(sys.executable).parent  # dvc and moto_server of this environment
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def dvc(repo: Path, *args: str) -> float:
    """Seconds one dvc command takes in ``repo`` (it must succeed)."""

    def run():
        result = subprocess.run(
            [str(BIN / "dvc"), *args], cwd=repo, capture_output=True, text=True, env={**os.environ, **S3_ENV}
        )
        if result.returncode != 0:
            raise RuntimeError(f"dvc {' '.join(args)} failed in {repo}: {result.stderr[-2000:]}")

    return timed(run)


def write_run(store: Path, run_index: int, epochs: int, size: int, image_format: str) -> float:
    """One run's store (its own images); returns the seconds spent writing (not making the images)."""
    generator = torch.Generator().manual_seed(run_index)
    aug, seed = RUNS[run_index % len(RUNS)].split("-seed")
    seconds, shards = 0.0, []
    for epoch in range(epochs):
        for layer, channels in LAYER_CHANNELS.items():
            for repeat in (1, 2):
                shard = ShardId(epoch, layer, repeat)
                prototypes = Prototypes(
                    images=smooth_images(channels, size, generator),
                    activations=torch.rand(channels),
                    latents=torch.zeros(channels, 16, dtype=torch.float16),
                    channels=torch.arange(channels),
                    dead=torch.zeros(channels, dtype=torch.bool),
                    redrawn=torch.zeros(channels, dtype=torch.bool),
                    evolution_activations=torch.zeros(channels),
                )
                seconds += timed(
                    lambda: write_shard(store, shard, f"bench-{run_index}", prototypes, image_format)
                )
                shards.append(shard)
    return seconds + timed(lambda: build_index(store, shards, aug=aug, seed=int(seed)))


def unit_read(store: Path) -> tuple[float, float, int]:
    """(seconds to open the store, seconds to read layer4 unit 17 at every epoch and repeat, images read)."""
    opened = {}
    open_seconds = timed(lambda: opened.update(store=open_prototypes(store)))
    images = {}
    read_seconds = timed(
        lambda: images.update(unit=opened["store"].images(opened["store"].select(layer="layer4", channel=17)))
    )
    return open_seconds, read_seconds, len(images["unit"])


def new_repo(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    for command in (
        ["git", "init", "-q"],
        [str(BIN / "dvc"), "init", "-q"],
        [str(BIN / "dvc"), "config", "cache.type", "hardlink"],
    ):
        subprocess.run(command, cwd=path, check=True)
    return path


def add_remotes(repo: Path, local_remote: Path, endpoint: str, prefix: str) -> None:
    for command in (
        ["add", "local", str(local_remote)],
        ["add", "s3", f"s3://protoviz/{prefix}"],
        ["modify", "s3", "endpointurl", endpoint],
    ):
        subprocess.run([str(BIN / "dvc"), "remote", *command], cwd=repo, check=True, capture_output=True)


def transfer_row(scratch: Path, name: str, epochs: int, size: int, image_format: str, endpoint: str) -> dict:
    """One run's store in ``image_format``: write, add, push and pull to both remotes, read a unit."""
    repo = new_repo(scratch / f"run-{name}")
    row = {"write": write_run(repo / "store", 0, epochs, size, image_format)}
    row["bytes"] = size_on_disk(repo / "store")
    row["dvc add"] = dvc(repo, "add", "store")
    add_remotes(repo, scratch / f"remote-{name}", endpoint, name)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "store"], cwd=repo, check=True
    )
    for remote in ("local", "s3"):
        row[f"push {remote}"] = dvc(repo, "push", "-r", remote)
        fresh = scratch / f"fresh-{name}-{remote}"
        shutil.rmtree(fresh, ignore_errors=True)
        subprocess.run(["git", "clone", "-q", str(repo), str(fresh)], check=True)
        subprocess.run([str(BIN / "dvc"), "config", "cache.type", "hardlink"], cwd=fresh, check=True)
        row[f"pull {remote}"] = dvc(fresh, "pull", "-r", remote)
        same = subprocess.run(["diff", "-rq", str(repo / "store"), str(fresh / "store")], capture_output=True)
        if same.returncode != 0:
            raise RuntimeError(f"the store pulled from {remote} differs: {same.stdout[:500]!r}")
        shutil.rmtree(fresh)
    row["open"], row["unit"], row["images"] = unit_read(repo / "store")
    shutil.rmtree(scratch / f"remote-{name}")
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=len(RUNS))
    p.add_argument("--epochs", type=int, default=101, help="checkpoints per run (epochs 0..100: 101)")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--workdir", required=True, help="scratch folder on a disk with room for the study")
    args = p.parse_args()
    scratch = Path(args.workdir)
    shutil.rmtree(scratch, ignore_errors=True)
    per_run = args.epochs * 2 * sum(LAYER_CHANNELS.values())

    # 1. The whole study, raw shards, one store per run in one repository.
    study = new_repo(scratch / "study")
    write_seconds = 0.0
    for i in range(args.runs):
        write_seconds += write_run(study / "study" / RUNS[i % len(RUNS)], i, args.epochs, args.size, "raw")
        print(f"wrote run {i + 1}/{args.runs}", flush=True)
    study_bytes = size_on_disk(study / "study")
    shards = sum(1 for _ in (study / "study").rglob("*.pt"))
    add_seconds = dvc(study, "add", *[f"study/{RUNS[i % len(RUNS)]}" for i in range(args.runs)])
    status_seconds = [dvc(study, "status") for _ in range(3)]
    open_seconds, unit_seconds, unit_images = unit_read(study / "study" / RUNS[0])
    everywhere = {}

    def unit_in_every_run():
        stores = [open_prototypes(study / "study" / RUNS[i % len(RUNS)]) for i in range(args.runs)]
        everywhere["n"] = sum(len(s.images(s.select(layer="layer4", channel=17))) for s in stores)

    across_runs = timed(unit_in_every_run)
    shutil.rmtree(study)  # room for the transfer rows

    # 2. One run, raw and png, pushed and pulled to both remotes.
    with s3_server() as endpoint:
        transfer = {
            fmt: transfer_row(scratch, fmt, args.epochs, args.size, fmt, endpoint) for fmt in ("raw", "png")
        }

    print(
        f"\n1. The study: {args.runs} runs x {per_run:,} = {args.runs * per_run:,} prototypes "
        f"at {args.size} px "
        f"({args.epochs} epochs), raw shards, {shards:,} shard files + {args.runs} indexes\n"
    )
    print(
        "| bytes | write | dvc add (hardlink cache) | dvc status (3 tries) | open one run's store | "
        f"one unit, {args.epochs} epochs x 2 repeats | the same unit in all {args.runs} runs |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {study_bytes / 1e9:.1f} GB | {write_seconds:.0f} s | {add_seconds:.0f} s | "
        f"{', '.join(f'{s:.2f}' for s in status_seconds)} s | {open_seconds:.2f} s | "
        f"{unit_seconds:.2f} s ({unit_images} images) | {across_runs:.2f} s ({everywhere['n']} images) |"
    )
    print(
        f"\n2. One run ({per_run:,} prototypes), raw and png shards; "
        f"push/pull to a local directory remote and "
        f"to moto's S3 server on 127.0.0.1; pulls into a fresh clone, checked identical with diff -r\n"
    )
    columns = ["bytes", "write", "dvc add", "push local", "pull local", "push s3", "pull s3", "unit"]
    print("| shards | " + " | ".join(columns[:-1]) + f" | one unit, {args.epochs} epochs x 2 repeats |")
    print("|---" * (len(columns) + 1) + "|")
    for fmt, row in transfer.items():
        cells = (
            [f"{row['bytes'] / 1e9:.2f} GB"]
            + [f"{row[c]:.1f} s" for c in columns[1:-1]]
            + [f"{row['unit']:.2f} s"]
        )
        print(f"| {fmt} | " + " | ".join(cells) + " |")
    raw, png = transfer["raw"], transfer["png"]
    print("| png / raw | " + " | ".join(f"{png[c] / raw[c]:.2f}x" for c in columns) + " |")
    print(
        f"\nScaled to the study ({args.runs} runs): raw {raw['bytes'] * args.runs / 1e9:.1f} GB, push to S3 "
        f"{raw['push s3'] * args.runs / 60:.0f} min; png {png['bytes'] * args.runs / 1e9:.1f} GB, push to S3 "
        f"{png['push s3'] * args.runs / 60:.0f} min"
    )
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
