"""extract stage: a prototype per checkpoint, layer, channel and repeat, in a packed store.

    python -m stages.extract --checkpoints out/checkpoints --store out/prototypes --metrics ...
    python -m stages.extract export --store out/prototypes --out grid.png --epoch 5 --layer layer2
"""

from __future__ import annotations

import sys
import time

import mlflow
from tqdm import tqdm

from protoviz_core.checkpoints import choose_epochs, read_checkpoint, require_checkpoints
from protoviz_core.config import ParamsError, load_params
from protoviz_core.devices import resolve_device
from protoviz_core.extraction import SynthesisSettings, execute, pending, plan, remove_stale_shards
from protoviz_core.montage import grid
from protoviz_core.outputs import write_json
from protoviz_core.store import build_index, open_prototypes
from protoviz_core.tracking import pipeline_run
from stages import _cli


def extract(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--checkpoints", required=True, help="folder of epoch_XXXX.pt (train stage output)")
    p.add_argument("--store", required=True, help="prototype store folder (shards + index.parquet)")
    p.add_argument("--metrics", required=True, help="JSON summary of the last epoch per layer")
    args = p.parse_args(argv)
    params = load_params(args.params)
    x = params.extract
    checkpoints = require_checkpoints(args.checkpoints)
    try:
        epochs = choose_epochs(list(checkpoints), x.epochs)
    except ValueError as exc:
        raise ParamsError(f"{args.params}: {exc}") from None
    settings = SynthesisSettings(
        generator=x.generator, generator_weights=x.generator_weights, image_size=params.data.image_size,
        cma_steps=x.cma_steps, cma_popsize=x.cma_popsize, cma_sigma=x.cma_sigma, adam_steps=x.adam_steps,
        adam_lr=x.adam_lr, max_batch=x.max_batch, device=str(resolve_device(x.device)),
    )
    trained_by = read_checkpoint(checkpoints[max(checkpoints)], mmap=True)["training_hash"]
    tasks = plan(checkpoints, epochs, x.layers, x.repeats, run_seed=params.seed, seed=x.seed,
                 training_hash=trained_by, channels_per_layer=x.channels_per_layer, settings=settings,
                 common_streams=x.common_streams)
    remove_stale_shards(args.store, tasks, print)
    todo = pending(args.store, tasks)

    with pipeline_run(params, "extract"):
        started = time.perf_counter()
        with tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="extract", unit="shard") as bar:
            done = execute(todo, args.store, executor=x.executor, ray_address=x.ray_address,
                           on_done=lambda summary: bar.update())
        index = build_index(args.store, [task.shard for task in tasks], aug=params.aug, seed=params.seed)
        per_layer = index.groupby(["epoch", "layer"]).agg(activation=("activation", "mean"), dead=("dead", "mean"))
        for (epoch, layer), row in per_layer.iterrows():
            mlflow.log_metrics({f"extract/activation/{layer}": row.activation,
                                f"extract/dead_fraction/{layer}": row.dead}, step=int(epoch))
        if done:
            mlflow.log_metric("extract/prototypes_per_s",
                              sum(s["prototypes"] for s in done) / (time.perf_counter() - started))

    last = per_layer.loc[max(epochs)]
    write_json(args.metrics, {
        "prototypes": len(index), "epoch": max(epochs),
        **{layer: {"activation": row.activation, "dead_fraction": row.dead} for layer, row in last.iterrows()},
    })


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
        raise SystemExit(f"error: no prototypes match {keys} in {args.store}")
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
