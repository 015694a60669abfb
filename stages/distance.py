"""distance stage: diversity, rate of change and re-evolution consistency per epoch and layer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mlflow
import pandas as pd
from tqdm import tqdm

from protoviz_core.config import load_params
from protoviz_core.distance import epoch_rows
from protoviz_core.outputs import atomic_write, cached, read_cached, remove_unplanned, write_csv, write_json
from protoviz_core.tracking import pipeline_run
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--embeddings", required=True, help="embed stage output folder")
    p.add_argument("--parts", required=True, help="folder for per-(space, epoch) results (resume)")
    p.add_argument("--table", required=True, help="Parquet: space, metric, masked, layer, epoch, quantity, value")
    p.add_argument("--metrics", required=True, help="JSON summary: last epoch per layer, default space")
    p.add_argument("--plot", required=True, help="CSV: diversity per epoch, one column per layer")
    args = p.parse_args(argv)
    params = load_params(args.params)
    view = params.distance
    embeddings = Path(args.embeddings)
    info = json.loads((embeddings / "info.json").read_text())  # what this run's embed stage made
    spaces, epochs = info["spaces"], info["epochs"]

    rows = []
    for space in spaces:
        files = [embeddings / space / f"e{epoch:04d}.pt" for epoch in epochs]
        remove_unplanned(Path(args.parts) / space, [path.name for path in files], print)
        for path, following in tqdm(list(zip(files, files[1:] + [None])), desc=f"distance {space}", unit="epoch"):
            key, vectors = read_cached(path)
            next_key, next_vectors = read_cached(following) if following else (None, None)
            epoch = int(path.stem[1:])
            rows += cached(Path(args.parts) / space / path.name, f"{key}:{next_key}",
                           lambda: epoch_rows(space, epoch, vectors, next_vectors))
    table = pd.DataFrame(rows)
    with atomic_write(args.table, "wb") as f:
        table.to_parquet(f, index=False)

    headline = table[table.quantity.isin(["diversity", "rate_of_change", "consistency"])]
    with pipeline_run(params, "distance"):
        for epoch, group in headline.groupby("epoch"):  # one batch per epoch: SQLite stays fast
            mlflow.log_metrics({
                f"{r.quantity}/{r.space}/{r.metric}{'-masked' if r.masked else ''}/{r.layer}": r.value
                for r in group.itertuples()
            }, step=int(epoch))

    shown = headline[(headline.space == view.space) & (headline.metric == view.metric)
                     & (headline.masked == view.masked)]
    last = shown[shown.epoch == shown.epoch.max()]
    write_json(args.metrics, {
        "space": view.space, "metric": view.metric, "masked": view.masked, "epoch": int(shown.epoch.max()),
        **{layer: dict(zip(group.quantity, group.value)) for layer, group in last.groupby("layer")},
    })
    diversity = shown[shown.quantity == "diversity"].pivot(index="epoch", columns="layer", values="value")
    write_csv(args.plot, [{"epoch": int(epoch), **row} for epoch, row in diversity.iterrows()])


if __name__ == "__main__":
    sys.exit(_cli.run(main))
