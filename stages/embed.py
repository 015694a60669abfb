"""embed stage: every prototype, RF-masked and plain, in pixel space and the embedding networks."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import mlflow
from tqdm import tqdm

from protoviz_core.config import ParamsError, load_params
from protoviz_core.devices import resolve_device
from protoviz_core.embedding import EMBEDDING_VERSION, embed_epoch, load_network
from protoviz_core.outputs import cached, remove_unplanned, write_json
from protoviz_core.rfield import load_masks, masks_for_epoch
from protoviz_core.store import open_prototypes
from protoviz_core.tracking import pipeline_run
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
    epochs = sorted(int(e) for e in store.index["epoch"].unique())
    layers = sorted(store.index["layer"].unique())
    all_masks = load_masks(args.rfmasks)
    try:
        masks = {epoch: masks_for_epoch(all_masks, epoch, layers) for epoch in epochs}
    except ValueError as exc:
        raise ParamsError(f"{args.params}: {exc}") from None
    device = resolve_device(settings.device)
    spaces = ["pixel", *settings.nets]
    out = Path(args.out)
    for folder in sorted(out.iterdir()) if out.is_dir() else []:
        if folder.is_dir() and folder.name not in spaces:
            print(f"removing {folder}: not part of this configuration")
            shutil.rmtree(folder)
    for space in spaces:
        remove_unplanned(out / space, [f"e{epoch:04d}.pt" for epoch in epochs], print)

    with pipeline_run(params, "embed"):
        mlflow.set_tag("protoviz.embed_weights", settings.weights)  # random weights must not pass as real
        for space in spaces:
            network = None if space == "pixel" else load_network(space, settings.weights)
            for epoch in tqdm(epochs, desc=f"embed {space}", unit="epoch"):
                fingerprint = hashlib.sha256(repr(store.shard_keys(epoch=epoch)).encode())
                for layer in layers:
                    fingerprint.update(masks[epoch][layer].numpy().tobytes())
                fingerprint.update(f"{settings.weights}:{EMBEDDING_VERSION}".encode())
                key = fingerprint.hexdigest()[:24]
                cached(out / space / f"e{epoch:04d}.pt", key, lambda: embed_epoch(
                    store, epoch, space, masks[epoch], network=network,
                    batch_size=settings.batch_size, device=device,
                ))
    write_json(out / "info.json", {"spaces": spaces, "weights": settings.weights, "epochs": epochs})


if __name__ == "__main__":
    sys.exit(_cli.run(main))
