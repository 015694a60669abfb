"""rfmask stage: gradient receptive field and fitted Gaussian mask per checkpoint and layer."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
from tqdm import tqdm

from protoviz_core.checkpoints import load_backbone, read_checkpoint, require_checkpoints, select_epochs
from protoviz_core.checks import require_informative
from protoviz_core.config import load_params
from protoviz_core.devices import resolve_device
from protoviz_core.outputs import cached, remove_unplanned, write_csv, write_json
from protoviz_core.rfield import layer_fields
from protoviz_core.tracking import pipeline_run
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--checkpoints", required=True, help="folder of epoch_XXXX.pt (train stage output)")
    p.add_argument("--out", required=True, help="folder for epoch_XXXX.pt receptive fields and masks")
    p.add_argument("--metrics", required=True, help="JSON: last epoch's fit per layer")
    p.add_argument("--plot", required=True, help="CSV: fitted centre and sigma per epoch and layer")
    args = p.parse_args(argv)
    params = load_params(args.params)
    settings = params.rfmask
    checkpoints = require_checkpoints(args.checkpoints)
    device = resolve_device(settings.device)
    # The checkpoints' own identity (configuration and training code) keys the cache.
    trained_by = read_checkpoint(checkpoints[max(checkpoints)], mmap=True)["training_hash"]
    key = f"{trained_by}:{params.section_hash('rfmask')}"

    epochs = select_epochs(list(checkpoints), settings.every)
    remove_unplanned(args.out, [checkpoints[epoch].name for epoch in epochs], print)

    rows = []
    with pipeline_run(params, "rfmask"):
        for epoch in tqdm(epochs, desc="rfmask", unit="ckpt"):
            def compute(path=checkpoints[epoch]):
                backbone, meta = load_backbone(path)
                fields = layer_fields(
                    backbone, settings.layers, image_size=meta["image_size"], samples=settings.samples,
                    channels_per_layer=settings.channels_per_layer, seed=settings.seed, device=device,
                    normalize=meta["normalize"], max_batch=settings.max_batch,
                )
                for layer, field in fields.items():  # checked before the file is written
                    require_informative(field["mask"], f"RF mask of {path} ({layer})", items_must_differ=False)
                return fields

            fields = cached(Path(args.out) / checkpoints[epoch].name, f"{key}:{epoch}", compute)
            for layer, field in fields.items():
                (cy, cx), (sy, sx) = field["center"], field["sigma"]
                rows.append({"epoch": epoch, "layer": layer, "center_y": cy, "center_x": cx,
                             "sigma_y": sy, "sigma_x": sx, "sigma": (sy + sx) / 2, "fit_ok": field["fit_ok"]})
                mlflow.log_metric(f"rfmask/sigma/{layer}", (sy + sx) / 2, step=epoch)

    last = max(row["epoch"] for row in rows)
    write_json(args.metrics, {row["layer"]: {k: row[k] for k in ("sigma_y", "sigma_x", "fit_ok")}
                              for row in rows if row["epoch"] == last})
    write_csv(args.plot, rows)


if __name__ == "__main__":
    sys.exit(_cli.run(main))
