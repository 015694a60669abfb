"""Benchmark: which training settings make the offline demo's network learn, at equal cost.

Trains the demo's ResNet18 with SimCLR under candidate settings, each for both conditions
(clrjit, keepclr) and several seeds, through the train stage's own call
(:func:`protoviz_core.training.loop.train_learner`) on the synthetic STL10-format set. For each
run it reports:

- the final NT-Xent loss against chance's, ln(2B - 1) for batch B (the loss of embeddings
  that tell no two images apart, whatever the temperature);
- the logistic-regression probe (the probe stage's readout and settings) at epoch 0 and at
  the last epoch;
- the wall time of training.

Candidates keep the demo's epochs (so every later stage has as many checkpoints to
measure) and differ in what costs no more per epoch: temperature, learning rate, crop
scale, batch size, image size and data set size. The demo's params are chosen from this
table (``bench/RESULTS.md``).

    python -m bench.choices.demo_training                                  # every candidate, 3 seeds
    python -m bench.choices.demo_training --candidates before chosen --seeds 1 2 3 --out runs.csv

Prints one markdown table, a row per (candidate, condition): means over seeds, with the
worst seed's learning (last - epoch 0) and gap (clrjit - keepclr of the same seed).
"""

from __future__ import annotations

import argparse
import csv
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from protoviz_core.data.stl10 import read_split
from protoviz_core.data.synthetic import write_synthetic_stl10
from protoviz_core.measures.probe import probe_accuracies
from protoviz_core.models.features import extract_features
from protoviz_core.pipeline.config import ProbeParams, TrainParams
from protoviz_core.training.checkpoints import load_backbone
from protoviz_core.training.loop import train_learner

# The demo before this benchmark (params.yaml until 2026-12-07), then the candidates.
BASE = {
    "epochs": 5,
    "batch_size": 32,
    "lr": 0.06,
    "temperature": 0.5,
    "min_scale": 0.08,
    "cj_strength": 1.0,
    "gaussian_blur": 0.5,
    "image_size": 48,
    "n_unlabeled": 3000,
}
# "small": temperature 0.2, crops of 25% or more, and what SimCLR uses for CIFAR-10's 32 px
# images (Chen et al. 2020, App. B.9): colour distortion at strength 0.5, no Gaussian blur.
SMALL = {"temperature": 0.2, "gaussian_blur": 0.0, "min_scale": 0.25, "cj_strength": 0.5}
CANDIDATES = {
    "before": {},
    "t0.2": {"temperature": 0.2},
    "t0.2-noblur-scale0.25": {"temperature": 0.2, "gaussian_blur": 0.0, "min_scale": 0.25},
    "small": SMALL,
    "small-lr0.12": {**SMALL, "lr": 0.12},
    "small-t0.1": {**SMALL, "temperature": 0.1},
    "small-lr0.03": {**SMALL, "lr": 0.03},  # the demo's params since 2026-12-07
}
DATA_KEYS = ("image_size", "n_unlabeled")


def synthetic_set(root: Path, image_size: int, n_unlabeled: int) -> Path:
    """The demo's synthetic set at this size (params.yaml's data.synthetic otherwise)."""
    folder = root / f"data-{image_size}px-{n_unlabeled}"
    if not folder.exists():
        write_synthetic_stl10(
            folder, image_size=image_size, n_unlabeled=n_unlabeled, n_train=1000, n_test=1000, seed=0
        )
    return folder


def logreg_accuracy(checkpoint: Path, data: Path, image_size: int) -> float:
    """The probe stage's logistic-regression test accuracy for one checkpoint."""
    backbone, meta = load_backbone(checkpoint)
    features = {}
    for split in ("train", "test"):
        images, labels = read_split(data, split, image_size)
        features[split] = (extract_features(backbone, images, meta["normalize"]).numpy(), labels)
    settings = ProbeParams()
    return probe_accuracies(*features["train"], *features["test"], settings)["logreg"]


def run(name: str, aug: str, seed: int, root: Path) -> dict:
    """Train one (candidate, condition, seed) and measure it."""
    settings = {**BASE, **CANDIDATES[name]}
    data = synthetic_set(root, settings["image_size"], settings["n_unlabeled"])
    config = TrainParams(
        **{k: v for k, v in settings.items() if k not in DATA_KEYS}, num_workers=2, device="cpu"
    )
    images, _ = read_split(data, "unlabeled", settings["image_size"])
    out = root / f"{name}-{aug}-{seed}"
    started = time.perf_counter()
    result = train_learner(
        images,
        config,
        aug=aug,
        seed=seed,
        image_size=settings["image_size"],
        checkpoint_dir=out / "checkpoints",
        state_path=out / "state.pt",
        training_hash=f"bench-{name}-{aug}-{seed}",
        device=torch.device("cpu"),
        log=lambda line: None,
    )
    seconds = time.perf_counter() - started
    last = max(result.checkpoints)
    return {
        "candidate": name,
        "aug": aug,
        "seed": seed,
        "train_s": round(seconds, 1),
        "final_loss": round(result.losses[last], 4),
        "chance": round(math.log(2 * config.batch_size - 1), 4),
        "logreg_epoch0": logreg_accuracy(result.checkpoints[0], data, settings["image_size"]),
        "logreg_last": logreg_accuracy(result.checkpoints[last], data, settings["image_size"]),
    }


def steps_per_s(names: list[str], steps: int, rounds: int, root: Path) -> dict[str, float]:
    """Training steps per second of each candidate, measured alternately over ``rounds`` rounds of
    ``steps`` steps (the train stage's loader, learner and optimiser), so machine noise hits all alike."""
    timings: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in names:
            settings = {**BASE, **CANDIDATES[name]}
            data = synthetic_set(root, settings["image_size"], settings["n_unlabeled"])
            images, _ = read_split(data, "unlabeled", settings["image_size"])
            config = TrainParams(**{k: v for k, v in settings.items() if k not in DATA_KEYS}, num_workers=2)
            subset = np.ascontiguousarray(images[: steps * config.batch_size])  # one epoch of `steps` steps
            started = time.perf_counter()
            train_learner(
                subset,
                config.model_copy(update={"epochs": 1}),
                aug="clrjit",
                seed=1,
                image_size=settings["image_size"],
                checkpoint_dir=root / "throughput" / name,
                state_path=root / "throughput" / f"{name}.pt",
                training_hash=f"throughput-{len(timings[name])}",
                device=torch.device("cpu"),
                log=lambda line: None,
            )
            timings[name].append(steps / (time.perf_counter() - started))
    return {name: float(np.median(values)) for name, values in timings.items()}


def summary(rows: list[dict]) -> str:
    """One markdown row per (candidate, condition): means over seeds, worst seed's margins."""
    lines = [
        "| candidate | aug | seeds | train s (mean) | loss - chance | logreg epoch 0 | logreg last "
        "| learning (worst seed) | gap over keepclr (worst seed) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    last = {(r["candidate"], r["aug"], r["seed"]): r["logreg_last"] for r in rows}
    for name in dict.fromkeys(r["candidate"] for r in rows):
        for aug in ("clrjit", "keepclr"):
            mine = [r for r in rows if r["candidate"] == name and r["aug"] == aug]
            if not mine:
                continue
            learning = [r["logreg_last"] - r["logreg_epoch0"] for r in mine]
            gaps = [
                r["logreg_last"] - last[(name, "keepclr", r["seed"])]
                for r in mine
                if aug == "clrjit" and (name, "keepclr", r["seed"]) in last
            ]
            lines.append(
                f"| {name} | {aug} | {len(mine)} | {np.mean([r['train_s'] for r in mine]):.0f} "
                f"| {np.mean([r['final_loss'] - r['chance'] for r in mine]):+.2f} "
                f"| {np.mean([r['logreg_epoch0'] for r in mine]):.3f} "
                f"| {np.mean([r['logreg_last'] for r in mine]):.3f} "
                f"| {min(learning):+.3f} | {f'{min(gaps):+.3f}' if gaps else ''} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES))
    parser.add_argument("--augs", nargs="+", default=["clrjit", "keepclr"], choices=["clrjit", "keepclr"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--out", type=Path, help="CSV of every run (appended as runs finish)")
    parser.add_argument(
        "--throughput", action="store_true", help="only steps/s of the candidates, alternating (no probes)"
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.throughput:
            rates = steps_per_s(args.candidates, steps=30, rounds=3, root=Path(tmp))
            first = args.candidates[0]
            for name, rate in rates.items():
                print(f"| {name} | {rate:.2f} steps/s | {rate / rates[first]:.2f} x {first}'s |")
            return
        for name in args.candidates:
            for seed in args.seeds:
                for aug in args.augs:
                    rows.append(run(name, aug, seed, Path(tmp)))
                    print(rows[-1], flush=True)
                    if args.out:
                        with args.out.open("w", newline="") as f:
                            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                            writer.writeheader()
                            writer.writerows(rows)
    print(summary(rows))


if __name__ == "__main__":
    main()
