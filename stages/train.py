"""train stage: SimCLR on the unlabeled split; a backbone checkpoint per epoch (resumable)."""

from __future__ import annotations

import sys

import mlflow

from protoviz_core.config import load_params
from protoviz_core.outputs import write_csv, write_json
from protoviz_core.stl10 import read_images
from protoviz_core.tracking import pipeline_run
from protoviz_core.training import code_version, train_simclr
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--data", required=True, help="stl10_binary folder (data stage output)")
    p.add_argument("--checkpoints", required=True, help="folder for epoch_XXXX.pt")
    p.add_argument("--state", required=True, help="resume state file")
    p.add_argument("--metrics", required=True, help="JSON metrics file")
    p.add_argument("--plot", required=True, help="CSV of loss per epoch")
    args = p.parse_args(argv)
    params = load_params(args.params)
    images = read_images(args.data, "unlabeled", params.data.image_size)

    with pipeline_run(params, "train"):
        result = train_simclr(
            images, params.train, aug=params.aug, seed=params.seed,
            image_size=params.data.image_size, checkpoint_dir=args.checkpoints,
            state_path=args.state, training_hash=f"{params.training_hash()}-{code_version()}",
            on_epoch_end=lambda epoch, loss: mlflow.log_metric("train/loss", loss, step=epoch),
        )
        if result.trained_epochs:
            mlflow.log_metric("train/images_per_s", result.images_per_s)

    final_epoch = max(result.losses, default=0)
    write_json(args.metrics, {
        "epochs": params.train.epochs,
        "final_loss": result.losses.get(final_epoch),
        "checkpoints": len(result.checkpoints),
    })
    rows = [{"epoch": e, "loss": loss} for e, loss in sorted(result.losses.items())]
    write_csv(args.plot, rows or [{"epoch": 0, "loss": float("nan")}])


if __name__ == "__main__":
    sys.exit(_cli.run(main))
