"""The stages that take a device, run as DVC runs them, on the suite's fake CUDA device
(tests/fake_cuda.py): every ``device.type == "cuda"`` branch on the CPU, with a device-placement
check that fails where a GPU would."""

import json

import torch

from protoviz_core.engine.generators import DecoderGenerator
from protoviz_core.prototypes.store import open_prototypes
from protoviz_core.training.checkpoints import list_checkpoints
from tests.fake_cuda import fake_cuda
from tests.helpers import run_pipeline, tiny_extract, tiny_params, write_params


def test_decoder_train_probe_rfmask_extract_and_embed_run_their_gpu_branches(project, monkeypatch):
    import protoviz_core.infra.devices as devices

    monkeypatch.setattr(devices, "_CLAIMED", [])  # this process claims the fake GPU afresh
    params = tiny_params(epochs=1, device="auto")
    params["probe"] = {"adam_epochs": 5}
    params["rfmask"] = {"layers": ["layer1", "layer4"], "samples": 2, "channels_per_layer": 2}
    params["extract"] = tiny_extract(  # device auto (the default): the fake GPU
        layers=["layer1", "layer4"],
        channels_per_layer=2,
        repeats=1,
        cma_steps=2,
        adam_steps=3,
        device="auto",
        generator="decoder",  # the demo's prior, trained on the fake GPU too
        generator_weights="out/decoder.pt",
    )
    params["decoder"] = {"latent_dim": 6, "width": 4, "epochs": 15, "batch_size": 16, "lr": 0.01}
    params["embed"] = {"nets": ["mobilenet_v2"], "weights": "random", "batch_size": 4}
    write_params(project / "params.yaml", params)
    # Placement is the subject here; bfloat16 (slow on a CPU) is tested in test_synthesis and test_training.
    with fake_cuda(reduced_precision=False) as gpu:
        run_pipeline(project, "decoder", "train", "probe", "rfmask", "exemplars", "extract", "embed")
    assert gpu.memory.resets == 4  # every shard sized its passes to the free memory
    assert gpu.blocking_copies == []  # training batches were pinned
    assert (project / ".dvc/tmp/gpu-locks/0.lock").exists()  # the stages claimed the GPU

    assert (
        DecoderGenerator.from_file(project / "out/decoder.pt", 24).latent_dim == 6
    )  # trained, saved on the CPU
    assert list(list_checkpoints(project / "out/checkpoints")) == [0, 1]
    probe = json.loads((project / "metrics/probe.json").read_text())
    assert all(0 <= value <= 1 for value in probe.values() if isinstance(value, float))
    store = open_prototypes(project / "out/prototypes")
    assert (
        len(store.index) == 2 * 2 * 2 and torch.isfinite(torch.tensor(store.index["activation"].values)).all()
    )
    assert store.index["activation"].gt(0).mean() > 0.5
    for space in ("pixel", "mobilenet_v2"):
        assert len(list((project / "out/embeddings" / space).glob("*.pt"))) == 2, space
