"""readability stage: a machine 2-AFC score of every extracted unit's prototypes, per epoch.

python -m stages.readability --data data/stl10_binary --checkpoints out/checkpoints \
    --prototypes out/prototypes --exemplars out/exemplars --rfmasks out/rfmasks \
    --out out/readability --metrics metrics/readability.json --plot plots/readability.csv

For each unit: can an observer that shares no weights with the network tell the unit's top
test images from its bottom ones, given the unit's prototypes? Given its natural exemplars
(the yardstick)? Given another unit's exemplars (the control, at chance)? See
protoviz_core/measures/readability.py and docs/readability.md.
"""

from __future__ import annotations

import sys

import mlflow
from tqdm import tqdm

from protoviz_core.data.stl10 import read_images
from protoviz_core.infra.devices import resolve_device
from protoviz_core.infra.dvc_files import write_csv, write_json
from protoviz_core.infra.work import run_work
from protoviz_core.measures.exemplars import ExemplarSet
from protoviz_core.measures.masks import load_masks
from protoviz_core.measures.readability import readability_work, score_rows
from protoviz_core.pipeline.config import load_params
from protoviz_core.pipeline.metric_keys import readability_key
from protoviz_core.pipeline.tracking import pipeline_run
from protoviz_core.prototypes.store import open_prototypes
from protoviz_core.training.checkpoints import require_checkpoints
from stages import _cli

QUERY_SPLIT = "test"  # neither training's exemplars (exemplars.splits) nor the search saw it


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--data", required=True, help="stl10_binary folder (data stage output)")
    p.add_argument("--checkpoints", required=True, help="folder of epoch_XXXX.pt (train stage output)")
    p.add_argument("--prototypes", required=True, help="prototype store (extract stage output)")
    p.add_argument("--exemplars", required=True, help="natural exemplars (exemplars stage output)")
    p.add_argument("--rfmasks", required=True, help="receptive-field masks (rfmask stage output)")
    p.add_argument("--out", required=True, help="folder for eXXXX.pt per-unit scores (resume)")
    p.add_argument("--metrics", required=True, help="JSON: last epoch's scores per layer")
    p.add_argument("--plot", required=True, help="CSV: median and mean score per epoch, layer, explanation")
    args = p.parse_args(argv)
    params = load_params(args.params)
    store = open_prototypes(args.prototypes)
    epochs = sorted(int(e) for e in store.index.epoch.unique())
    checkpoints = require_checkpoints(args.checkpoints)
    exemplars = ExemplarSet.open(args.exemplars, args.data, params.data.image_size, epochs)
    items = readability_work(
        {e: checkpoints[e] for e in epochs},
        store,
        exemplars,
        load_masks(args.rfmasks),
        read_images(args.data, QUERY_SPLIT, params.data.image_size),
        params.readability,
        read_unit=params.read_unit,
        device=resolve_device(params.readability.device),
        observer_weights=params.embed.weights,
    )
    with pipeline_run(params, "readability"), tqdm(total=len(items), desc="readability", unit="epoch") as bar:
        results = run_work(items, args.out, on_done=lambda item, reused: bar.update())
        rows = score_rows(epochs, results)
        for epoch in epochs:
            mlflow.log_metrics(
                {
                    readability_key(r["explanation"], r["layer"]): r["median"]
                    for r in rows
                    if r["epoch"] == epoch
                },
                step=epoch,
            )
    last = [r for r in rows if r["epoch"] == epochs[-1]]
    summary = {"epoch": epochs[-1]}
    for row in last:
        layer = summary.setdefault(row["layer"], {})
        if row["explanation"] == "specificity":  # one value per layer
            layer["specificity"] = row["median"]
            continue
        layer[f"{row['explanation']}_median"] = row["median"]
        layer[f"{row['explanation']}_mean"] = row["mean"]
    for layer in {r["layer"] for r in last}:
        scores = summary[layer]
        if scores["exemplars_median"] > 0:
            scores["prototypes_to_exemplars"] = round(
                scores["prototypes_median"] / scores["exemplars_median"], 4
            )
    write_json(args.metrics, summary)
    write_csv(args.plot, rows)
    for layer in sorted(k for k in summary if k != "epoch"):
        scores = summary[layer]
        print(
            f"readability at epoch {epochs[-1]}, {layer}: prototypes {scores['prototypes_median']:.2f}, "
            f"exemplars {scores['exemplars_median']:.2f}, control {scores['control_mean']:.2f} (chance 0.5); "
            f"specificity {scores['specificity']:.2f}"
        )


if __name__ == "__main__":
    sys.exit(_cli.run(main))
