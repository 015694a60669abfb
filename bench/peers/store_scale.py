"""Benchmark: the packed prototype store against one PNG file per prototype, at scale.

Writes the same N synthetic prototypes (default 100,000 at 96 px: ResNet18's 960
channels of layer1-4 x 2 repeats x as many epochs as it takes) twice, in one run:

- the protoviz store: one shard per (epoch, layer, repeat) + index.parquet;
- loose PNG files, one per prototype, in epoch/layer/repeat folders.

and reports, side by side: bytes on disk, write time, ``dvc add``, ``dvc status``
and ``dvc push`` (to a local remote) times, and the time to load one (epoch, layer)
and one channel across all epochs. Each layout lives in its own DVC repository with
its own remote, so each row's ``dvc status`` walks only its own files. Images are
smooth random fields (upsampled noise), so PNG compresses them about as well as real
prototypes.

    python -m bench.peers.store_scale                       # 100,000 prototypes (several GB, minutes)
    python -m bench.peers.store_scale --count 5000 --workdir /tmp/store-bench
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import LAYER_CHANNELS, size_on_disk, smooth_images, timed
from protoviz_core.engine.synthesis import Prototypes
from protoviz_core.prototypes.store import ShardId, build_index, open_prototypes, write_shard


def plan(count: int) -> list[ShardId]:
    shards, total, epoch = [], 0, 0
    while total < count:
        for layer, channels in LAYER_CHANNELS.items():
            for repeat in (1, 2):
                if total < count:
                    shards.append(ShardId(epoch, layer, repeat))
                    total += channels
        epoch += 1
    return shards


def dvc(repo: Path, *args: str) -> float:
    return timed(lambda: subprocess.run(["dvc", *args], cwd=repo, check=True, capture_output=True))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, removed after)")
    args = p.parse_args()
    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="store-bench-"))
    repos = {"store": scratch / "store-repo", "pngs": scratch / "png-repo"}
    for name, repo in repos.items():
        shutil.rmtree(repo, ignore_errors=True)
        repo.mkdir(parents=True)
        subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
        subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True)
        subprocess.run(
            ["dvc", "remote", "add", "-d", "local", str(scratch / f"{name}-remote")], cwd=repo, check=True
        )

    shards = plan(args.count)
    generator = torch.Generator().manual_seed(0)
    store, pngs = repos["store"] / "store", repos["pngs"] / "pngs"
    store_seconds = png_seconds = 0.0
    written = 0
    for shard in shards:
        channels = LAYER_CHANNELS[shard.layer]
        images = smooth_images(channels, args.size, generator)
        prototypes = Prototypes(
            images=images,
            activations=torch.rand(channels, generator=generator),
            latents=torch.zeros(channels, 16),
            channels=torch.arange(channels),
            dead=torch.zeros(channels, dtype=torch.bool),
            redrawn=torch.zeros(channels, dtype=torch.bool),
            evolution_activations=torch.zeros(channels),
        )
        store_seconds += timed(lambda: write_shard(store, shard, "bench", prototypes))
        folder = pngs / f"e{shard.epoch:04d}" / shard.layer / f"r{shard.repeat}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

        def save_pngs():
            for channel, image in enumerate(pixels):
                Image.fromarray(image).save(folder / f"{channel:04d}.png")

        png_seconds += timed(save_pngs)
        written += channels
    store_seconds += timed(lambda: build_index(store, shards, aug="clrjit", seed=1))

    rows = {
        "protoviz store": {"path": "store", "write": store_seconds},
        "loose PNG files": {"path": "pngs", "write": png_seconds},
    }
    for row in rows.values():
        repo = repos[row["path"]]
        row["bytes"] = size_on_disk(repo / row["path"])
        row["files"] = sum(1 for f in (repo / row["path"]).rglob("*") if f.is_file())
        row["dvc add"] = dvc(repo, "add", row["path"])
        row["dvc status"] = dvc(repo, "status")
        row["dvc push"] = dvc(repo, "push", f"{row['path']}.dvc")

    last_epoch = shards[-1].epoch
    opened = open_prototypes(store)
    rows["protoviz store"]["load one (epoch, layer)"] = timed(
        lambda: opened.images(opened.select(epoch=0, layer="layer4"))
    )
    rows["protoviz store"]["load one channel, all epochs"] = timed(
        lambda: opened.images(opened.select(layer="layer1", channel=5))
    )

    def load_pngs(paths):
        return np.stack([np.asarray(Image.open(path)) for path in paths])

    layer4 = sorted((pngs / "e0000" / "layer4").rglob("*.png"))
    one_channel = sorted(pngs.glob("e*/layer1/r*/0005.png"))
    rows["loose PNG files"]["load one (epoch, layer)"] = timed(lambda: load_pngs(layer4))
    rows["loose PNG files"]["load one channel, all epochs"] = timed(lambda: load_pngs(one_channel))

    print(f"{written} prototypes at {args.size} px, {len(shards)} shards, epochs 0..{last_epoch}\n")
    columns = [
        "files",
        "bytes",
        "write",
        "dvc add",
        "dvc status",
        "dvc push",
        "load one (epoch, layer)",
        "load one channel, all epochs",
    ]
    print("| | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = [f"{row['files']}", f"{row['bytes'] / 1e9:.2f} GB"] + [f"{row[c]:.2f} s" for c in columns[2:]]
        print(f"| {name} | " + " | ".join(cells) + " |")
    store_row, png_row = rows["protoviz store"], rows["loose PNG files"]
    ratios = [f"{png_row[c] / store_row[c]:.1f}x" for c in columns[1:]]
    print("| PNG / store | " + " | ".join([f"{png_row['files'] / store_row['files']:.0f}x"] + ratios) + " |")
    if not args.workdir:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
