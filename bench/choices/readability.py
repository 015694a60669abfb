"""Which image prior makes prototypes an observer can read: side by side on one run's checkpoint.

For every extracted layer of a finished pipeline folder (its last checkpoint, exemplars,
RF masks and the test split), the same channels are synthesised with each prior, twice
(two seeds), and scored on:

- readability: the machine 2-AFC of protoviz_core.measures.readability (median over units), beside
  the same task answered from the units' natural exemplars (the yardstick) and from another
  unit's exemplars (the control, at chance when the task is sound);
- specificity: the re-evolution distance over the between-unit distance (mask-weighted
  mean squared pixel difference; lower is better: 1 means two searches of one unit differ
  as much as two units do);
- superstimulus: median activation over the best activation of the run's exemplar sample;
- seconds per prototype on this machine.

Priors (each as its users run it):
- fourier: the engine's Lucid-style Fourier image, up to 30 Adam steps at lr 0.8 (the demo's
  before maco);
- decoder: the run's trained VAE decoder (the decoder stage's out/decoder.pt) with
  transformation robustness, 40 Adam steps at lr 0.1 (params.yaml);
- maco: the phase-only prior with the run's magnitude spectrum and transformation
  robustness, 40 Adam steps at lr 0.3 (the demo's before decoder);
- pixel: raw pixels, no prior, Adam lr 0.1;
- lucent: Lucent 0.1.8's render_vis with its defaults (its Fourier image with decorrelated
  colour, standard_transforms, Adam lr 0.05, 512 steps), the unit read as the run reads it
  (the mean of the window's positions); `make bench` installs it.

    python -m bench.choices.readability                      # this folder's demo run
    python -m bench.choices.readability --run /path/to/run --markdown
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from bench.common import lucent_images
from protoviz_core.data.stl10 import read_images
from protoviz_core.engine.generators import (
    DecoderGenerator,
    DecoderWeightsError,
    MacoGenerator,
    load_magnitude,
)
from protoviz_core.engine.normalization import IMAGENET_NORMALIZE, Normalizer
from protoviz_core.engine.robustness import Robustness
from protoviz_core.engine.synthesis import Procedure, synthesize
from protoviz_core.engine.units import (
    centre_activation,
    channel_count,
    layer_reader,
    spaced_channels,
)
from protoviz_core.measures.distance import mask_weighted, unit_diversity
from protoviz_core.measures.exemplars import ExemplarSet
from protoviz_core.measures.masks import load_masks
from protoviz_core.measures.readability import score_layer, texture_features, unit_activations
from protoviz_core.pipeline.config import load_params
from protoviz_core.presentation.montage import grid, surround_gain
from protoviz_core.training.checkpoints import list_checkpoints, load_backbone


@dataclass
class Made:
    """What a search gives the bench: images (C, 3, S, S) in [0, 1] and activations (C,)."""

    images: torch.Tensor
    activations: torch.Tensor


def lucent_prototypes(
    model, layer: str, channels: torch.Tensor, size: int, read_unit: str, seed: int
) -> Made:
    """Lucent's render_vis with its defaults (bench/peers/synthesis.py), each image maximising its
    channel's unit read as the run reads it; images on the 8-bit grid the store keeps."""
    _, images = lucent_images(model, layer, channels, size, (512,), read_unit=read_unit, seed=seed)
    images = images.clamp(0, 1).mul(255).round().div(255)
    model.eval()
    normalise = Normalizer(IMAGENET_NORMALIZE, torch.device("cpu"))  # Lucent's preprocess: ImageNet's
    with torch.no_grad(), layer_reader(model, layer) as read:
        activations = centre_activation(read(normalise(images)), channels, read_unit)
    return Made(images, activations)


def priors(run: Path, size: int) -> dict[str, dict]:
    """name -> Procedure fields beyond the image size and the run's unit and normalisation (decoder:
    where the run has trained one)."""
    search = dict(cma_steps=5, cma_popsize=12, cma_sigma=1.0, adam_steps=30)
    decoder = {}
    try:
        decoder["decoder"] = dict(
            generator=DecoderGenerator.from_file(run / "out/decoder.pt", size),
            adam_lr=0.1,
            transforms=[Robustness()],
            **{**search, "adam_steps": 40},
        )
    except DecoderWeightsError as exc:  # the run trained no decoder (another generator)
        print(f"decoder prior left out: {exc}")
    return {
        **decoder,
        "fourier": dict(generator="fourier", adam_lr=0.8, **search),
        "maco": dict(
            generator=MacoGenerator(load_magnitude(run / "out/spectrum.pt", size)),
            adam_lr=0.3,
            transforms=[Robustness()],
            **{**search, "adam_steps": 40},
        ),
        "pixel": dict(generator="pixel", adam_lr=0.1, **search),
        "lucent": {},  # lucent_prototypes
    }


def _specificity(images: torch.Tensor, mask: torch.Tensor) -> float:
    """images (2, C, 3, S, S) in [0, 1] -> re-evolution over between-unit mask-weighted distance."""
    vectors = mask_weighted(images.flatten(2), mask)  # (2, C, D)
    between = float((unit_diversity(vectors[0], "mse") + unit_diversity(vectors[1], "mse")).mean() / 2)
    again = float((vectors[0] - vectors[1]).square().mean(dim=1).mean())
    return again / between


def measure(run: Path, chosen: list[str] | None) -> tuple[pd.DataFrame, dict]:
    params = load_params(run / "params.yaml")
    size, read_unit = params.data.image_size, params.read_unit
    checkpoints = list_checkpoints(run / "out/checkpoints")
    epoch = max(checkpoints)
    model, meta = load_backbone(checkpoints[epoch])
    exemplars = ExemplarSet.open(run / "out/exemplars", run / "data/stl10_binary", size, [epoch])
    masks = load_masks(run / "out/rfmasks").for_epoch(epoch, params.extract.layers)
    test = read_images(run / "data/stl10_binary", "test", size)
    test_features = texture_features(torch.from_numpy(np.ascontiguousarray(test)))
    units = unit_activations(
        model,
        test,
        params.extract.layers,
        normalize=meta["normalize"],
        read_unit=read_unit,
        batch_size=250,
        device=torch.device("cpu"),
    )
    if (not chosen or "lucent" in chosen) and any(
        abs(a - b) > 1e-6
        for key in ("mean", "std")
        for a, b in zip(meta["normalize"][key], IMAGENET_NORMALIZE[key])
    ):
        sys.exit("lucent preprocesses with ImageNet's normalisation; this run's checkpoints use another")
    settings = params.readability
    rows, shown = [], {}  # shown[(prior, layer)]: (C, 3, S, S) first seed's prototypes, surround dimmed
    for name, options in priors(run, size).items():
        if chosen and name not in chosen:
            continue
        for layer in params.extract.layers:
            channels = spaced_channels(channel_count(model, layer, size), params.extract.channels_per_layer)
            found, seconds = [], 0.0
            for seed in (0, 1):
                start = time.perf_counter()
                if name == "lucent":
                    found.append(lucent_prototypes(model, layer, channels, size, read_unit, seed))
                    seconds += time.perf_counter() - start
                    continue
                procedure = Procedure(
                    image_size=size, normalize=meta["normalize"], read_unit=read_unit, **options
                )
                found.append(synthesize(model, layer, channels, procedure, seed=seed))
                seconds += time.perf_counter() - start
            images = torch.stack([f.images for f in found])  # (2, C, 3, S, S)
            shown[(name, layer)] = images[0] * surround_gain(masks[layer])
            best, positions = exemplars.top(epoch, layer, channels.tolist())
            natural = torch.from_numpy(exemplars.pool.images(positions.flatten().numpy()))
            scores = score_layer(
                units[layer][:, channels],
                test_features,
                texture_features(images.transpose(0, 1).flatten(0, 1), masks[layer]).view(
                    len(channels), 2, -1
                ),
                texture_features(natural, masks[layer]).view(len(channels), positions.shape[1], -1),
                top=settings.top,
                bottom_fraction=settings.bottom_fraction,
                bottom_draws=settings.bottom_draws,
                seed=settings.seed,
            )
            ratio = torch.stack([f.activations for f in found]).mean(0) / best[:, 0].clamp(min=1e-6)
            rows.append(
                {
                    "prior": name,
                    "layer": layer,
                    "readability": float(np.median(scores["prototypes"].numpy())),
                    "exemplars": float(np.median(scores["exemplars"].numpy())),
                    "control": float(scores["control"].mean()),
                    "specificity": _specificity(images, masks[layer]),
                    "superstimulus": float(ratio.median()),
                    "s_per_prototype": seconds / (2 * len(channels)),
                }
            )
            print(
                f"{name:8s} {layer}: "
                + ", ".join(f"{k} {v:.3g}" for k, v in rows[-1].items() if isinstance(v, float)),
                flush=True,
            )
    return pd.DataFrame(rows), shown


def _figure(run: Path, shown: dict, path: Path) -> None:
    """Two units per layer (rows): each prior's prototype (surround dimmed), then its top 4 exemplars."""
    params = load_params(run / "params.yaml")
    size = params.data.image_size
    epoch = max(list_checkpoints(run / "out/checkpoints"))
    exemplars = ExemplarSet.open(run / "out/exemplars", run / "data/stl10_binary", size, [epoch])
    model, _ = load_backbone(list_checkpoints(run / "out/checkpoints")[epoch])
    names = list(dict.fromkeys(prior for prior, _ in shown))
    cells, labels = [], []
    for layer in params.extract.layers:
        channels = spaced_channels(channel_count(model, layer, size), params.extract.channels_per_layer)
        for index in (0, len(channels) - 1):
            _, positions = exemplars.top(epoch, layer, [int(channels[index])])
            natural = torch.from_numpy(exemplars.pool.images(positions[0, :4].numpy())).float() / 255
            cells += [shown[(prior, layer)][index] for prior in names] + list(natural)
            labels.append(f"{layer}:{int(channels[index])}")
    columns = len(names) + 4
    sheet = grid((torch.stack(cells).clamp(0, 1) * 255).round().to(torch.uint8), columns, gap=2)
    figure, axis = plt.subplots(figsize=(1.1 * columns + 1, 1.1 * len(labels) + 0.6), dpi=100)
    axis.imshow(np.asarray(sheet), interpolation="nearest")
    step = size + 2
    axis.set_xticks([step * i + size / 2 for i in range(columns)], [*names, "natural #1", "#2", "#3", "#4"])
    axis.set_yticks([step * i + size / 2 for i in range(len(labels))], labels)
    axis.tick_params(length=0)
    axis.set_title(f"epoch {epoch}: each prior's prototype (surround dimmed) and the unit's top images")
    figure.tight_layout()
    figure.savefig(path)
    print(f"figure: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", type=Path, default=Path(__file__).resolve().parents[2], help="pipeline folder"
    )
    parser.add_argument("--priors", nargs="*", help="only these (decoder, fourier, maco, pixel, lucent)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--figure", type=Path, help="PNG: two units per layer, each prior's prototype, 4 exemplars"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    table, shown = measure(args.run, args.priors)
    if args.figure:
        _figure(args.run, shown, args.figure)
    table["to_exemplars"] = table.readability / table.exemplars
    print(table.round(3).to_markdown(index=False) if args.markdown else table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
