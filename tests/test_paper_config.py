"""configs/paper.yaml, branch by branch, scaled down only in sizes.

The paper run takes code paths the offline demo never does: real STL10 files, the
DeePSiM fc6 prior from its published weights file, and the ten ImageNet networks
built by torchvision from the hub cache. Here every stage runs with the paper's own
settings for each of those branches; only sizes shrink (images, epochs, channels,
noise samples, search steps, batch sizes, worker processes, and the embedding
networks to one of each family) so the whole pipeline fits a 2-core CPU in about
two minutes.

The weights are random but in the published formats (tests/published_weights.py
says how they are made); the STL10 files are written here byte by byte in the
STL10 binary layout (uint8, each image channel by channel, each channel column-major;
labels 1..10), with fewer images than the real set.
"""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from protoviz_core.data.stl10 import read_split
from protoviz_core.pipeline.mlflow_store import EXPERIMENT_NAME
from protoviz_core.pipeline.run_identity import EMBED_WEIGHTS_TAG
from stages import _cli
from stages import data as data_stage
from tests.helpers import STAGE_ARGS, run_pipeline, stages_from
from tests.published_weights import write_published_deepsim

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"unlabeled": 48, "train": 30, "test": 30}  # the real set: 100,000 / 5,000 / 8,000
FAMILIES = ("resnet50", "inception_v3", "vgg16", "densenet201", "mobilenet_v2")


def _write_stl10_binary(folder: Path) -> dict[str, np.ndarray]:
    """A small STL10 in its binary layout; returns each split's images as (N, 3, 96, 96) rows first."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, count in SPLITS.items():
        labels = np.arange(count) % 10
        # Class-dependent colour plus noise, so the probes have something to read.
        images = (rng.integers(0, 128, (count, 3, 96, 96)) + (labels * 12)[:, None, None, None]).astype(
            np.uint8
        )
        (folder / f"{split}_X.bin").write_bytes(np.ascontiguousarray(images.transpose(0, 1, 3, 2)).tobytes())
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        written[split] = images
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    return written


def _paper_params_at_tiny_sizes(stl10_root: Path, deepsim: Path) -> dict:
    params = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    params["data"]["root"] = str(stl10_root)
    params["train"].update(epochs=1, batch_size=16, num_workers=0)
    params["probe"].update(batch_size=32, adam_epochs=2, adam_batch_size=16)
    params["rfmask"].update(samples=2, channels_per_layer=2, max_batch=64)
    params["extract"].update(
        channels_per_layer=2,
        cma_steps=1,
        cma_popsize=4,
        adam_steps=1,
        max_batch=64,
        generator_weights=str(deepsim),
    )
    # One network of each family (each its own torchvision builder branch); every one of the ten
    # published files is loaded and compared with torchvision's model in tests/measures/test_embedding.py.
    params["embed"].update(batch_size=16, nets=list(FAMILIES))
    # The paper's montage units (layer3:1, 2, 12, 98) are not among 2 extracted channels: the same
    # branch (listed units, listed epochs) with units that are.
    params["report"].update(units=["layer3:0", "layer3:255"], montage_epochs=[0, 1], thumb_size=16)
    return params


@pytest.mark.slow
def test_paper_configuration_runs_every_branch(tmp_path, published_torch_home, monkeypatch):
    written = _write_stl10_binary(tmp_path / "stl10" / "stl10_binary")
    deepsim = write_published_deepsim(tmp_path / "upconvGAN_fc6.pt")
    params = _paper_params_at_tiny_sizes(tmp_path / "stl10", deepsim)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(published_torch_home))

    # data: the real-STL10 branch, with the split sizes it checks scaled down like everything else.
    monkeypatch.setattr("protoviz_core.data.stl10.STL10_SPLIT_SIZES", SPLITS)
    assert _cli.run(data_stage.main, STAGE_ARGS["data"]) == 0
    for split in ("train", "test"):
        images, labels = read_split(tmp_path / "data", split)
        assert np.array_equal(images, written[split]) and labels.max() == 9

    run_pipeline(tmp_path, "spectrum", *stages_from("train"))

    checkpoint = torch.load(tmp_path / "out/checkpoints/epoch_0001.pt", weights_only=True)
    assert checkpoint["image_size"] == 96
    shards = sorted(p.name for p in (tmp_path / "out/prototypes/shards").iterdir())
    assert len(shards) == 2 * 4 * 2  # epochs x layers x repeats
    info = json.loads((tmp_path / "out/embeddings/info.json").read_text())
    assert info["weights"] == "imagenet" and info["spaces"] == ["pixel", *params["embed"]["nets"]]

    table = pd.read_parquet(tmp_path / "out/distances.parquet")
    assert set(table.space) == {"pixel", *params["embed"]["nets"]}
    assert np.isfinite(table.value).all()
    diversity = table[table.quantity == "diversity"]
    assert (diversity.value > 0).all()  # no space, metric or layer collapsed to one point
    per_series = diversity.groupby(["space", "metric", "masked"]).value.nunique()
    assert (per_series > 1).all(), per_series[per_series <= 1]
    shown = json.loads((tmp_path / "metrics/distance.json").read_text())
    assert (shown["space"], shown["metric"], shown["masked"]) == ("resnet50", "mse", True)

    # The observer of the 2-AFC is the paper path's ImageNet ResNet50 (published-format weights here).
    assert params["readability"]["observer"] == "resnet50"
    readability = json.loads((tmp_path / "metrics/readability.json").read_text())
    assert all(0 <= readability[layer]["exemplars_median"] <= 1 for layer in ("layer1", "layer4"))
    assert (tmp_path / "report/development.png").is_file() and (tmp_path / "report/index.html").is_file()
    # This test's database, whatever an earlier test set
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    (run,) = client.search_runs([client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id])
    assert run.data.tags[EMBED_WEIGHTS_TAG] == "imagenet"
    assert len(client.get_metric_history(run.info.run_id, "probe/logreg")) == 2
    assert len(client.get_metric_history(run.info.run_id, "diversity/densenet201/mse-masked/layer4")) == 2


def test_the_paper_procedure_runs_every_generation_and_step_and_climbs_from_the_recombined_mean():
    """configs/paper.yaml's extract procedure, as the authors' code does it, at a tiny size."""
    import dataclasses

    from protoviz_core.engine.cmaes import BatchedCMAES
    from protoviz_core.engine.generators import make_generator
    from protoviz_core.engine.rng import stream_keys
    from protoviz_core.engine.synthesis import Procedure, stream_seed, synthesize
    from protoviz_core.engine.units import centre_activation, layer_reader
    from protoviz_core.models.backbones import build_backbone

    paper = yaml.safe_load((REPO / "configs/paper.yaml").read_text())["extract"]
    assert (
        paper["early_exit"],
        paper["evolution"],
        paper["adam_start"],
        paper["objective"],
        paper["precision"],
        paper["redraw_dead"],
        paper["resize"],
        paper["common_streams"],
    ) == (False, "fixed_sigma", "mean", "after_relu", "float32", False, "legacy", "starts")
    assert (
        paper["cma_steps"],
        paper["cma_popsize"],
        paper["cma_sigma"],
        paper["adam_steps"],
        paper["adam_lr"],
    ) == (20, 30, 2.0, 50, 0.01)
    assert paper["robustness"] is False  # the authors' code: the generator is the only prior
    whole = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    assert whole["read_unit"] == "top_left"  # act[c, (H-1)//2, (W-1)//2]

    torch.manual_seed(0)
    model = build_backbone().eval()
    prior = make_generator("deepsim_fc6", 32, "random", antialias=paper["resize"] == "antialias")
    # The paper's procedure with random DeePSiM weights; sizes shrink, nothing else
    procedure = Procedure.from_extract(paper, 32, generator=prior, cma_steps=3, cma_popsize=6, adam_steps=4)
    channels = torch.tensor([0, 5, 9])
    batches = []
    hook = model.conv1.register_forward_hook(lambda module, inputs, output: batches.append(len(inputs[0])))
    result = synthesize(model, "layer2", channels, procedure, seed=4)
    hook.remove()
    # Every channel in every generation (1 start + 3 x 6 samples each), every Adam step (4) for all of
    # them, then the final images: no channel leaves early.
    assert batches == [1] + [3] + [3 * 6] * 3 + [3] * 4 + [3]  # first: the channel count's probe image

    # The climb starts from the evolution's recombined mean: with no Adam step, the codes are that mean,
    # replayed here with the authors' fixed-step evolution on the unit after its ReLU.
    result = synthesize(model, "layer2", channels, dataclasses.replace(procedure, adam_steps=0), seed=4)
    start = prior.sample(stream_keys(stream_seed(4, "start"), channels), step=0)
    es = BatchedCMAES(
        start, procedure.cma_sigma, 6, seed=stream_seed(4, "evolution"), keys=channels, adapt=False
    )
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    with torch.no_grad(), layer_reader(model, "layer2") as read:
        for _ in range(3):
            samples = es.ask()
            images = prior(samples.reshape(18, -1))
            scores = centre_activation(read((images - mean) / std), channels.repeat_interleave(6)).view(3, 6)
            es.tell(-scores)
    torch.testing.assert_close(result.latents, es.mean)
    assert torch.equal(es.sigma, torch.full((3,), 2.0))  # the step size never adapted
