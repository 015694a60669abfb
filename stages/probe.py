"""probe stage: linear-probe accuracy of every (or every k-th) checkpoint, three readouts."""

from __future__ import annotations

import sys

import mlflow
from tqdm import tqdm

from protoviz_core.data.stl10 import read_split
from protoviz_core.infra.devices import resolve_device
from protoviz_core.infra.dvc_files import write_csv, write_json
from protoviz_core.infra.work import run_work
from protoviz_core.measures.probe import feature_work, probe_accuracies
from protoviz_core.pipeline.config import load_params
from protoviz_core.pipeline.metric_keys import probe_key
from protoviz_core.pipeline.tracking import pipeline_run
from protoviz_core.training.checkpoints import choose_epochs, require_checkpoints
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--data", required=True, help="stl10_binary folder (data stage output)")
    p.add_argument("--checkpoints", required=True, help="folder of epoch_XXXX.pt (train stage output)")
    p.add_argument("--cache", required=True, help="folder for cached features, one file per checkpoint")
    p.add_argument("--metrics", required=True, help="JSON metrics: last probed epoch's accuracies")
    p.add_argument("--plot", required=True, help="CSV of accuracy per epoch and readout")
    args = p.parse_args(argv)
    params = load_params(args.params)
    checkpoints = require_checkpoints(args.checkpoints)
    (train_images, train_labels), (test_images, test_labels) = (
        read_split(args.data, split, params.data.image_size) for split in ("train", "test")
    )
    epochs = choose_epochs(list(checkpoints), params.probe.every, "probe.every", args.params)
    items = feature_work(
        {e: checkpoints[e] for e in epochs},
        {"train": train_images, "test": test_images},
        params.section_hash("data"),
        batch_size=params.probe.batch_size,
        device=resolve_device(params.probe.device),
    )

    rows = []
    with pipeline_run(params, "probe"), tqdm(total=len(items), desc="probe", unit="ckpt") as bar:
        features = run_work(items, args.cache, on_done=lambda item, reused: bar.update())
        for epoch, split in zip(epochs, features):
            accuracy = probe_accuracies(
                split["train"].numpy(), train_labels, split["test"].numpy(), test_labels, params.probe
            )
            mlflow.log_metrics({probe_key(name): value for name, value in accuracy.items()}, step=epoch)
            rows.append({"epoch": epoch, **accuracy})

    write_json(args.metrics, rows[-1])
    write_csv(args.plot, rows)


if __name__ == "__main__":
    sys.exit(_cli.run(main))
