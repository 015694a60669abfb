"""train stage: the learner (train.method) on the unlabeled split, or supervised on the labelled
train split; a backbone checkpoint per epoch (resumable)."""

from __future__ import annotations

import sys

import mlflow
from tqdm import tqdm

from protoviz_core.data.stl10 import read_split
from protoviz_core.infra.devices import resolve_device
from protoviz_core.infra.dvc_files import write_csv, write_json
from protoviz_core.models.features import extract_features
from protoviz_core.models.learners import learner_class, training_split
from protoviz_core.pipeline.config import load_params
from protoviz_core.pipeline.metric_keys import TRAIN_IMAGES_PER_S, TRAIN_LOSS
from protoviz_core.pipeline.tracking import pipeline_run
from protoviz_core.training.checkpoints import load_backbone
from protoviz_core.training.diagnosis import collapsed, learned_nothing
from protoviz_core.training.loop import train_learner
from stages import _cli

COLLAPSE_CHECK_IMAGES = 256  # training images whose final features are checked for collapse


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--data", required=True, help="stl10_binary folder (data stage output)")
    p.add_argument("--checkpoints", required=True, help="folder for epoch_XXXX.pt")
    p.add_argument("--state", required=True, help="resume state file")
    p.add_argument(
        "--snapshots", required=True, help="folder for the resume state every train.state_every epochs"
    )
    p.add_argument("--metrics", required=True, help="JSON metrics file")
    p.add_argument("--plot", required=True, help="CSV of loss per epoch")
    args = p.parse_args(argv)
    params = load_params(args.params)
    learner = learner_class(params.train.method)
    print(f"train: {learner.name}: {learner.notes}", file=sys.stderr)
    images, labels = read_split(args.data, training_split(learner.name), params.data.image_size)
    steps = len(images) // params.train.batch_size  # per epoch (full batches only)

    def step_done(epoch: int, step: int, loss: float) -> None:
        bar.update((epoch - 1) * steps + step - bar.n)
        bar.set_description(f"train epoch {epoch}/{params.train.epochs}", refresh=False)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    with (
        pipeline_run(params, "train"),
        tqdm(
            total=steps * params.train.epochs, desc="train", unit="step", dynamic_ncols=True, mininterval=1.0
        ) as bar,
    ):
        result = train_learner(
            images,
            params.train,
            labels=labels if learner.needs_labels else None,
            aug=params.aug,
            seed=params.seed,
            image_size=params.data.image_size,
            checkpoint_dir=args.checkpoints,
            state_path=args.state,
            snapshot_dir=args.snapshots,
            training_hash=params.training_identity(),
            device=resolve_device(params.train.device),
            on_step=step_done,
            on_epoch_end=lambda epoch, loss: mlflow.log_metric(TRAIN_LOSS, loss, step=epoch),
            log=bar.write,
        )
        if result.trained_epochs:
            mlflow.log_metric(TRAIN_IMAGES_PER_S, result.images_per_s)

    final_epoch = max(result.losses, default=0)
    warning = learned_nothing(params.train.method, result.losses.get(final_epoch), params.train.batch_size)
    if not warning and final_epoch in result.checkpoints:
        backbone, meta = load_backbone(result.checkpoints[final_epoch])
        features = extract_features(backbone, images[:COLLAPSE_CHECK_IMAGES], meta["normalize"])
        warning = collapsed(params.train.method, features, params.train.lr)
    if warning:
        print(warning, file=sys.stderr)
    write_json(
        args.metrics,
        {
            "epochs": params.train.epochs,
            "final_loss": result.losses.get(final_epoch),
            "checkpoints": len(result.checkpoints),
        },
    )
    rows = [{"epoch": e, "loss": loss} for e, loss in sorted(result.losses.items())]
    write_csv(args.plot, rows or [{"epoch": 0, "loss": float("nan")}])


if __name__ == "__main__":
    sys.exit(_cli.run(main))
