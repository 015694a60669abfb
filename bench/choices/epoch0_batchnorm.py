"""Measurement: what BatchNorm's placeholder statistics do to epoch 0's linear probe.

A fresh ResNet18's BatchNorm running statistics are placeholders (mean 0, variance 1).
This probes one checkpoint's backbone (by default the run's epoch 0) twice, with the
demo's probe params: with the placeholders (``reset_running_stats``), as epoch 0 was
evaluated before the train stage measured them, and with statistics measured on the
unlabeled images (``torch.optim.swa_utils.update_bn``, what the train stage now saves).

    python -m bench.choices.epoch0_batchnorm   # out/checkpoints/epoch_0000.pt, data/stl10_binary
"""

from __future__ import annotations

import argparse

import torch

from protoviz_core.data.stl10 import read_images, read_labels
from protoviz_core.measures.probe import probe_accuracies
from protoviz_core.models.features import extract_features
from protoviz_core.pipeline.config import load_params
from protoviz_core.training.checkpoints import load_backbone
from protoviz_core.training.loop import CALIBRATION_IMAGES, with_measured_batchnorm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="out/checkpoints/epoch_0000.pt")
    p.add_argument("--data", default="data/stl10_binary")
    p.add_argument("--params", default="params.yaml")
    args = p.parse_args()
    params = load_params(args.params)
    size = params.data.image_size
    splits = {name: read_images(args.data, name, size) for name in ("train", "test")}
    labels = {name: read_labels(args.data, name) for name in ("train", "test")}
    unlabeled = read_images(args.data, "unlabeled", size)[:CALIBRATION_IMAGES]
    backbone, meta = load_backbone(args.checkpoint)
    batch = params.train.batch_size
    print(f"{args.checkpoint}; {args.data}; probe params of {args.params}\n")
    print("| BatchNorm running statistics | logreg | linearsvc | adam |")
    print("|---|---|---|---|")
    measured = len(unlabeled) // batch * batch
    for label in ("placeholders (mean 0, variance 1)", f"measured on {measured} unlabeled images"):
        if label.startswith("placeholders"):
            for module in backbone.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.reset_running_stats()
        else:
            # measured as the train stage measures them
            backbone = with_measured_batchnorm(backbone, unlabeled, torch.device("cpu"), batch)
        features = {
            name: extract_features(backbone, images, meta["normalize"]).numpy()
            for name, images in splits.items()
        }
        scores = probe_accuracies(
            features["train"], labels["train"], features["test"], labels["test"], params.probe
        )
        print(
            f"| {label} | " + " | ".join(f"{scores[r]:.3f}" for r in ("logreg", "linearsvc", "adam")) + " |",
            flush=True,
        )


if __name__ == "__main__":
    main()
