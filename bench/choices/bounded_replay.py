"""Benchmark: what state snapshots cost on disk and save in replay when a checkpoint is lost.

A checkpoint lost from a finished run is made again by replaying training up to it. Without
snapshots the replay starts at the initial weights; with ``train.state_every: k`` it starts
at the newest snapshot before the hole (``protoviz_core.training.replay``).

1. Storage at the paper's configuration (``configs/paper.yaml``'s learner: ResNet18 with
   SimCLR's head, SGD with momentum): the bytes of one checkpoint and one state snapshot,
   written by the train stage's own call after a real SGD step (the sizes do not depend on
   the image size or the data), and what ``--epochs`` epochs with ``--every`` cost in all.
2. Replay for a hole at ``--hole`` of ``--epochs``: the epochs each replay trains, and, at a
   size this machine can train (``--measure-epochs`` of ``--images`` images at ``--size``
   px), the measured seconds of both replays of the same hole, side by side.

    python -m bench.choices.bounded_replay
    python -m bench.choices.bounded_replay --epochs 100 --every 10 --hole 90 --measure-epochs 10 --images 512

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from protoviz_core.pipeline.config import TrainParams
from protoviz_core.training.loop import train_learner
from protoviz_core.training.plan import list_snapshots

REPO = Path(__file__).resolve().parents[2]


def _train(images, config: TrainParams, folder: Path, snapshots: bool, **kwargs):
    return train_learner(
        images,
        config,
        aug="clrjit",
        seed=1,
        image_size=images.shape[-1],
        checkpoint_dir=folder / "checkpoints",
        state_path=folder / "state.pt",
        snapshot_dir=folder / "snapshots" if snapshots else None,
        training_hash="bench",
        device=torch.device("cpu"),
        log=lambda message: None,
        **kwargs,
    )


def paper_sizes(work: Path) -> tuple[int, int]:
    """Bytes of one checkpoint and one state snapshot of the paper's learner."""
    paper = yaml.safe_load((REPO / "configs/paper.yaml").read_text())["train"]
    config = TrainParams(**{**paper, "epochs": 2, "batch_size": 8, "num_workers": 0, "state_every": 1})
    images = np.random.default_rng(0).integers(0, 256, (8, 3, 32, 32), dtype=np.uint8)
    result = _train(images, config, work / "paper", snapshots=True)
    return result.checkpoints[1].stat().st_size, list_snapshots(work / "paper" / "snapshots")[
        1
    ].stat().st_size


def replay_seconds(
    work: Path, epochs: int, every: int, hole: int, images: int, size: int
) -> dict[str, float]:
    """Seconds to make checkpoint ``hole`` again, replaying from the initial weights and from a snapshot."""
    data = np.random.default_rng(1).integers(0, 256, (images, 3, size, size), dtype=np.uint8)
    config = TrainParams(epochs=epochs, batch_size=64, num_workers=0, device="cpu", state_every=every)
    finished = work / "finished"
    _train(data, config, finished, snapshots=True)
    seconds = {}
    for name, snapshots in (("initial weights", False), ("snapshot", True)):
        copy = work / name.replace(" ", "_")
        shutil.copytree(finished, copy)
        (copy / "checkpoints" / f"epoch_{hole:04d}.pt").unlink()
        started = time.perf_counter()
        _train(data, config, copy, snapshots=snapshots)
        seconds[name] = time.perf_counter() - started
    return seconds


def replayed_epochs(hole: int, epochs: int, every: int) -> tuple[int, int]:
    """Epochs trained by a replay for ``hole`` from the initial weights and from the newest
    snapshot before it (the replay goes one epoch past the hole, to check it)."""
    end = min(hole + 1, epochs)
    snapshots = [e for e in range(every, epochs, every) if e < hole] if every else []
    start = max(snapshots, default=0)
    return end, end - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--epochs", type=int, default=100, help="the paper-scale run's epochs (configs/paper.yaml)"
    )
    p.add_argument("--every", type=int, default=10, help="train.state_every")
    p.add_argument("--hole", type=int, default=90, help="the lost checkpoint's epoch")
    p.add_argument("--measure-epochs", type=int, default=10, help="epochs of the run measured here")
    p.add_argument("--measure-every", type=int, default=2, help="state_every of the run measured here")
    p.add_argument("--measure-hole", type=int, default=9, help="the hole of the run measured here")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--size", type=int, default=32)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint, snapshot = paper_sizes(work)
        seconds = replay_seconds(
            work, args.measure_epochs, args.measure_every, args.measure_hole, args.images, args.size
        )
    count = len(range(args.every, args.epochs, args.every)) if args.every else 0
    full, bounded = replayed_epochs(args.hole, args.epochs, args.every)
    m_full, m_bounded = replayed_epochs(args.measure_hole, args.measure_epochs, args.measure_every)
    mb = 1e6
    print("| quantity | without snapshots | with snapshots | ratio |")
    print("|---|---|---|---|")
    print(
        f"| one checkpoint / one snapshot (MB) | {checkpoint / mb:.1f} | {snapshot / mb:.1f} | "
        f"{snapshot / checkpoint:.2f} |"
    )
    total = (args.epochs + 1) * checkpoint
    kept = total + count * snapshot
    print(
        f"| storage of a {args.epochs}-epoch run, state_every {args.every} (MB) | {total / mb:.0f} | "
        f"{kept / mb:.0f} ({count} snapshots) | {kept / total:.2f} |"
    )
    print(
        f"| epochs replayed for a hole at {args.hole} of {args.epochs} | {full} | {bounded} | "
        f"{bounded / full:.2f} |"
    )
    print(
        f"| measured: epochs replayed for a hole at {args.measure_hole} of {args.measure_epochs} "
        f"(state_every {args.measure_every}, {args.images} images, {args.size} px) | "
        f"{m_full} | {m_bounded} | {m_bounded / m_full:.2f} |"
    )
    slow, fast = seconds["initial weights"], seconds["snapshot"]
    print(
        f"| measured: seconds of that replay (train stage's call, this CPU) | {slow:.1f} | "
        f"{fast:.1f} | {fast / slow:.2f} |"
    )


if __name__ == "__main__":
    main()
