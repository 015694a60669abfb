"""extract stage: a prototype per checkpoint, layer, channel and repeat, in a packed store.

    python -m stages.extract --checkpoints out/checkpoints --exemplars out/exemplars --store out/prototypes \
        --metrics metrics/extract.json
    python -m stages.extract export --store out/prototypes --out grid.png --epoch 5 --layer layer2
"""

from __future__ import annotations

import sys
import time

import mlflow
import pandas as pd
from tqdm import tqdm

from protoviz_core.engine.units import oversized_selections
from protoviz_core.infra.devices import resolve_device
from protoviz_core.infra.dvc_files import write_json
from protoviz_core.infra.errors import ProtovizError
from protoviz_core.infra.work import compute_here, run_work
from protoviz_core.measures.exemplars import best_natural, read_exemplars
from protoviz_core.pipeline.config import load_params
from protoviz_core.pipeline.metric_keys import EXTRACT_PROTOTYPES_PER_S, extract_key
from protoviz_core.pipeline.tracking import pipeline_run
from protoviz_core.presentation.montage import grid
from protoviz_core.prototypes.extraction import image_prior, ray_executor, shard_work
from protoviz_core.prototypes.store import build_index, convert_shards, open_prototypes, shards_dir
from protoviz_core.training.checkpoints import choose_epochs, load_backbone, require_checkpoints
from stages import _cli


def extract(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--checkpoints", required=True, help="folder of epoch_XXXX.pt (train stage output)")
    p.add_argument(
        "--exemplars", required=True, help="folder of e{epoch}.pt natural exemplars (exemplars stage output)"
    )
    p.add_argument("--store", required=True, help="prototype store folder (shards + index.parquet)")
    p.add_argument("--metrics", required=True, help="JSON summary of the last epoch per layer")
    args = p.parse_args(argv)
    params = load_params(args.params)
    settings = params.extract
    checkpoints = require_checkpoints(args.checkpoints)
    epochs = choose_epochs(list(checkpoints), settings.epochs, params_file=args.params)
    # Ray tasks use the GPU Ray assigns each of them; this process claims none for them.
    device = (
        resolve_device(settings.device) if settings.executor == "local" or settings.device == "cpu" else None
    )
    work = shard_work(
        {e: checkpoints[e] for e in epochs},
        settings,
        run_seed=params.seed,
        image_size=params.data.image_size,
        device=device,
        read_unit=params.read_unit,
    )
    # Missing exemplars or bad generator weights stop the stage here, before any synthesis.
    exemplars = read_exemplars(args.exemplars, {e: checkpoints[e] for e in epochs})
    image_prior(settings.generator, settings.generator_weights, params.data.image_size, device or "cpu")
    for line in oversized_selections(
        load_backbone(checkpoints[epochs[0]])[0],
        settings.layers,
        settings.channels_per_layer,
        params.data.image_size,
        "extract.channels_per_layer",
    ):
        print(line)
    computed = set()  # names of the shards this run synthesised

    def done(item, reused):
        bar.update()
        computed.update([] if reused else [item.name])

    with pipeline_run(params, "extract"):
        started = time.perf_counter()
        with tqdm(total=len(work), desc="extract", unit="shard") as bar:
            shards = run_work(
                list(work.values()),
                shards_dir(args.store),
                on_done=done,
                executor=ray_executor(settings.ray_address, gpus=settings.device != "cpu")
                if settings.executor == "ray"
                else compute_here,
            )
        seconds = time.perf_counter() - started
        # Shards reused from a run with the other format are re-encoded.
        convert_shards(args.store, list(work), settings.shard_format)
        index = build_index(
            args.store,
            list(work),
            aug=params.aug,
            seed=params.seed,
            natural_best=lambda epoch, layer, channels: best_natural(exemplars[epoch], layer, channels),
        )
        per_layer = index.groupby(["epoch", "layer"]).agg(
            activation=("activation", "mean"),
            dead=("dead", "mean"),
            superstimulus=("superstimulus", "median"),
        )
        for (epoch, layer), row in per_layer.iterrows():
            logged = {
                extract_key("activation", layer): row.activation,
                extract_key("dead_fraction", layer): row.dead,
            }
            if pd.notna(row.superstimulus):  # NaN: no sampled image drives any of the layer's units
                logged[extract_key("superstimulus", layer)] = row.superstimulus
            mlflow.log_metrics(logged, step=int(epoch))
        if computed:
            made = sum(
                len(contents["channels"])
                for item, contents in zip(work.values(), shards)
                if item.name in computed
            )
            mlflow.log_metric(EXTRACT_PROTOTYPES_PER_S, made / seconds)

    last = per_layer.loc[max(epochs)]
    write_json(
        args.metrics,
        {
            "prototypes": len(index),
            "epoch": max(epochs),
            **{
                layer: {
                    "activation": row.activation,
                    "dead_fraction": row.dead,
                    "superstimulus_median": row.superstimulus if pd.notna(row.superstimulus) else None,
                }
                for layer, row in last.iterrows()
            },
        },
    )


def export(argv=None) -> None:
    p = _cli.parser("export a selection of prototypes as one PNG grid")
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--epoch", type=int, nargs="*")
    p.add_argument("--layer", nargs="*")
    p.add_argument("--repeat", type=int, nargs="*")
    p.add_argument("--channel", type=int, nargs="*")
    p.add_argument("--columns", type=int, default=None)
    args = p.parse_args(argv)
    store = open_prototypes(args.store)
    keys = {k: getattr(args, k) for k in ("epoch", "layer", "repeat", "channel") if getattr(args, k)}
    rows = store.select(**keys).sort_values(["layer", "repeat", "epoch", "channel"])
    if rows.empty:
        epochs = sorted(int(e) for e in store.index.epoch.unique())
        raise ProtovizError(
            f"no prototypes match {keys} in {args.store}; the store holds epochs {epochs} "
            f"and layers {sorted(store.index.layer.unique())}"
        )
    grid(store.images(rows), args.columns).save(args.out)
    print(f"wrote {len(rows)} prototypes to {args.out}")


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["export"]:
        export(argv[1:])
    else:
        extract(argv)


if __name__ == "__main__":
    sys.exit(_cli.run(main))
