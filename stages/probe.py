"""probe stage: linear-probe accuracy of every (or every k-th) checkpoint, three readouts."""

from __future__ import annotations

import sys

import mlflow
from tqdm import tqdm

from protoviz_core.checkpoints import require_checkpoints, select_epochs
from protoviz_core.config import load_params
from protoviz_core.devices import resolve_device
from protoviz_core.outputs import remove_unplanned, write_csv, write_json
from protoviz_core.probe import checkpoint_features, probe_accuracies
from protoviz_core.stl10 import read_split
from protoviz_core.tracking import pipeline_run
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
    train_images, train_labels = read_split(args.data, "train", params.data.image_size)
    test_images, test_labels = read_split(args.data, "test", params.data.image_size)
    splits = {"train": train_images, "test": test_images}
    device = resolve_device(params.probe.device)

    epochs = select_epochs(list(checkpoints), params.probe.every)
    remove_unplanned(args.cache, [checkpoints[epoch].name for epoch in epochs], print)

    rows = []
    with pipeline_run(params, "probe"):
        for epoch in tqdm(epochs, desc="probe", unit="ckpt"):
            features = checkpoint_features(
                checkpoints[epoch], splits, args.cache, params.section_hash("data"),
                batch_size=params.probe.batch_size, device=device,
            )
            accuracy = probe_accuracies(features["train"].numpy(), train_labels,
                                        features["test"].numpy(), test_labels, params.probe)
            mlflow.log_metrics({f"probe/{name}": value for name, value in accuracy.items()}, step=epoch)
            rows.append({"epoch": epoch, **accuracy})

    write_json(args.metrics, rows[-1])
    write_csv(args.plot, rows)


if __name__ == "__main__":
    sys.exit(_cli.run(main))
