"""rfmask stage: gradient receptive field and fitted Gaussian mask per checkpoint and layer."""

from __future__ import annotations

import sys

import mlflow
from tqdm import tqdm

from protoviz_core.engine.units import oversized_selections
from protoviz_core.infra.devices import resolve_device
from protoviz_core.infra.dvc_files import write_csv, write_json
from protoviz_core.infra.work import run_work
from protoviz_core.measures.rfield import field_rows, field_work
from protoviz_core.pipeline.config import load_params
from protoviz_core.pipeline.metric_keys import rfmask_sigma_key
from protoviz_core.pipeline.tracking import pipeline_run
from protoviz_core.training.checkpoints import choose_epochs, load_backbone, require_checkpoints
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--checkpoints", required=True, help="folder of epoch_XXXX.pt (train stage output)")
    p.add_argument("--out", required=True, help="folder for epoch_XXXX.pt receptive fields and masks")
    p.add_argument("--metrics", required=True, help="JSON: last epoch's fit per layer")
    p.add_argument("--plot", required=True, help="CSV: fitted centre and sigma per epoch and layer")
    args = p.parse_args(argv)
    params = load_params(args.params)
    checkpoints = require_checkpoints(args.checkpoints)
    epochs = choose_epochs(list(checkpoints), params.rfmask.every, "rfmask.every", args.params)
    items = field_work(
        {e: checkpoints[e] for e in epochs},
        params.rfmask,
        resolve_device(params.rfmask.device),
        params.read_unit,
    )
    backbone, meta = load_backbone(checkpoints[epochs[0]])
    for line in oversized_selections(
        backbone,
        params.rfmask.layers,
        params.rfmask.channels_per_layer,
        meta["image_size"],
        "rfmask.channels_per_layer",
    ):
        print(line)

    with pipeline_run(params, "rfmask"), tqdm(total=len(items), desc="rfmask", unit="ckpt") as bar:
        results = run_work(items, args.out, on_done=lambda item, reused: bar.update())
        rows = field_rows(epochs, results)
        for row in rows:
            mlflow.log_metric(rfmask_sigma_key(row["layer"]), row["sigma"], step=row["epoch"])

    write_json(
        args.metrics,
        {
            row["layer"]: {k: row[k] for k in ("sigma_y", "sigma_x", "fit_ok")}
            for row in rows
            if row["epoch"] == epochs[-1]
        },
    )
    write_csv(args.plot, rows)


if __name__ == "__main__":
    sys.exit(_cli.run(main))
