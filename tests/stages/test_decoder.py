"""The decoder stage on a tiny trained run: it trains the prior only when extract uses it."""

import torch

from protoviz_core.engine.generators import DecoderGenerator
from protoviz_core.prototypes.store import open_prototypes
from tests.helpers import (
    STAGE_ARGS,
    call_stage,
    run_pipeline,
    run_stage,
    tiny_extract,
    tiny_params,
    write_params,
)


def test_decoder_stage_trains_the_prior_on_the_training_images_and_extract_searches_its_latents(project):
    params = tiny_params(epochs=2)
    params["extract"] = tiny_extract(generator="decoder", generator_weights="out/decoder.pt", robustness=True)
    params["decoder"] = {"latent_dim": 6, "width": 4, "epochs": 15, "batch_size": 16, "lr": 0.01}
    params["exemplars"] = {"images": 60, "top_k": 4, "device": "cpu"}
    write_params(project / "params.yaml", params)
    stdout = run_stage("decoder", project, *STAGE_ARGS["decoder"])
    assert "a 6-d VAE decoder of the unlabeled images" in stdout
    decoder = DecoderGenerator.from_file(project / "out/decoder.pt", 24)
    assert decoder.latent_dim == 6
    run_pipeline(project, "exemplars", "extract")
    store = open_prototypes(project / "out/prototypes")
    rows = store.select(epoch=2, layer="layer2", repeat=1)
    assert len(rows) == 3 and store.images(rows).float().std() > 0
    # The prototypes are the decoder's images: the store keeps each one's latent (float16), which
    # decodes to it to within that rounding.
    latents = store.latents(rows).float()
    assert latents.shape == (3, 6)
    with torch.no_grad():
        decoded = decoder(latents) * 255
    assert (decoded - store.images(rows).float()).abs().mean() < 1.0


def test_without_the_decoder_generator_the_stage_trains_nothing_and_the_prior_says_so(project):
    params = tiny_params(epochs=2)
    params["extract"] = tiny_extract()  # the fourier prior
    write_params(project / "params.yaml", params)
    assert "not trained (extract.generator is fourier)" in run_stage(
        "decoder", project, *STAGE_ARGS["decoder"]
    )
    params["extract"] = tiny_extract(generator="decoder", generator_weights="out/decoder.pt")
    write_params(project / "params.yaml", params)
    run_stage("exemplars", project, *STAGE_ARGS["exemplars"])
    status, _, stderr = call_stage("extract", project, *STAGE_ARGS["extract"])
    assert status == 2 and "no decoder was trained (extract.generator was fourier" in stderr
    assert "dvc repro decoder" in stderr and "Traceback" not in stderr
