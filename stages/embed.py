"""embed stage: every prototype, RF-masked and plain, in pixel space and the embedding networks."""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
from tqdm import tqdm

from protoviz_core.infra.devices import resolve_device
from protoviz_core.infra.dvc_files import write_json
from protoviz_core.infra.work import prune, run_work
from protoviz_core.measures.embedding import embed_work
from protoviz_core.measures.masks import load_masks
from protoviz_core.pipeline.config import load_params
from protoviz_core.pipeline.run_identity import EMBED_WEIGHTS_TAG
from protoviz_core.pipeline.tracking import pipeline_run
from protoviz_core.prototypes.store import open_prototypes
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--prototypes", required=True, help="prototype store (extract stage output)")
    p.add_argument("--rfmasks", required=True, help="receptive-field masks (rfmask stage output)")
    p.add_argument("--out", required=True, help="folder: <space>/e<epoch>.pt embeddings + info.json")
    args = p.parse_args(argv)
    params = load_params(args.params)
    settings = params.embed
    store = open_prototypes(args.prototypes)
    masks = load_masks(args.rfmasks)
    device = resolve_device(settings.device)
    spaces = ["pixel", *settings.nets]
    out = Path(args.out)
    prune(out, spaces, print, pattern="*/")  # folders of spaces this configuration does not embed

    with pipeline_run(params, "embed"):
        mlflow.set_tag(EMBED_WEIGHTS_TAG, settings.weights)
        for space in spaces:
            items = embed_work(
                store, masks, space, weights=settings.weights, batch_size=settings.batch_size, device=device
            )
            with tqdm(total=len(items), desc=f"embed {space}", unit="epoch") as bar:
                run_work(items, out / space, on_done=lambda item, reused: bar.update())
    epochs = sorted(int(e) for e in store.index.epoch.unique())
    write_json(out / "info.json", {"spaces": spaces, "weights": settings.weights, "epochs": epochs})


if __name__ == "__main__":
    sys.exit(_cli.run(main))
