"""similarity stage: how far each extracted layer is from its final form at every epoch (linear CKA).

python -m stages.similarity --data data/stl10_binary --checkpoints out/checkpoints \
    --out out/similarity --metrics metrics/similarity.json --plot plots/similarity.csv

Every checkpoint's representation of one fixed sample of held-out test images: per layer, the
Gram matrix of the flattened map (for CKA between any two epochs or runs) and every channel's
unit (for matching units across runs). See protoviz_core/measures/similarity.py and docs/similarity.md.
"""

from __future__ import annotations

import sys

import mlflow
from tqdm import tqdm

from protoviz_core.data.stl10 import read_images
from protoviz_core.infra.devices import resolve_device
from protoviz_core.infra.dvc_files import write_csv, write_json
from protoviz_core.infra.work import run_work
from protoviz_core.measures.similarity import (
    SETTLED_CKA,
    SIMILARITY_ARTIFACTS,
    cka_rows,
    settled_epoch,
    similarity_work,
)
from protoviz_core.pipeline.config import load_params
from protoviz_core.pipeline.metric_keys import similarity_key
from protoviz_core.pipeline.tracking import pipeline_run
from protoviz_core.training.checkpoints import require_checkpoints
from stages import _cli

SAMPLE_SPLIT = "test"  # held out: neither training, the exemplars nor the search saw it


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--data", required=True, help="stl10_binary folder (data stage output)")
    p.add_argument("--checkpoints", required=True, help="folder of epoch_XXXX.pt (train stage output)")
    p.add_argument("--out", required=True, help="folder for eXXXX.pt representations (resume)")
    p.add_argument("--metrics", required=True, help="JSON: each layer's settling epoch and CKAs")
    p.add_argument("--plot", required=True, help="CSV: CKA to the final and first epoch per epoch and layer")
    args = p.parse_args(argv)
    params = load_params(args.params)
    settings = params.similarity
    checkpoints = require_checkpoints(args.checkpoints)
    epochs = sorted(checkpoints)
    items = similarity_work(
        checkpoints,
        read_images(args.data, SAMPLE_SPLIT, params.data.image_size),
        params.extract.layers,
        images=settings.images,
        seed=settings.seed,
        read_unit=params.read_unit,
        batch_size=settings.batch_size,
        device=resolve_device(settings.device),
    )
    with pipeline_run(params, "similarity"), tqdm(total=len(items), desc="similarity", unit="ckpt") as bar:
        results = run_work(items, args.out, on_done=lambda item, reused: bar.update())
        rows = cka_rows(epochs, results)
        # Logged with the run, so that stages.compare can set runs side by side on the same images.
        mlflow.log_artifacts(args.out, artifact_path=SIMILARITY_ARTIFACTS)
        for epoch in epochs:
            mlflow.log_metrics(
                {
                    similarity_key(quantity, row["layer"]): row[quantity]
                    for row in rows
                    if row["epoch"] == epoch
                    for quantity in ("cka_to_final", "cka_to_initial")
                },
                step=epoch,
            )
    summary = {"epoch": epochs[-1], "settled_at": SETTLED_CKA}
    for layer in params.extract.layers:
        layer_rows = [row for row in rows if row["layer"] == layer]
        settled = settled_epoch([r["epoch"] for r in layer_rows], [r["cka_to_final"] for r in layer_rows])
        summary[layer] = {
            "settled_epoch": settled,
            "cka_first_to_final": layer_rows[0]["cka_to_final"],
        }
        print(
            f"similarity, {layer}: CKA of epoch {epochs[0]} to epoch {epochs[-1]} "
            f"{layer_rows[0]['cka_to_final']:.2f}; at or above {SETTLED_CKA} from epoch {settled}"
        )
    write_json(args.metrics, summary)
    write_csv(args.plot, rows)


if __name__ == "__main__":
    sys.exit(_cli.run(main))
