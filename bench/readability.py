"""Which image prior makes prototypes an observer can read: side by side on one run's checkpoint.

For every extracted layer of a finished pipeline folder (its last checkpoint, exemplars,
RF masks and the test split), the same channels are synthesised with each prior, twice
(two seeds), and scored on:

- readability: the machine 2-AFC of protoviz_core.readability (median over units), beside
  the same task answered from the units' natural exemplars (the yardstick) and from another
  unit's exemplars (the control, at chance when the task is sound);
- specificity: the re-evolution distance over the between-unit distance (mask-weighted
  mean squared pixel difference; lower is better: 1 means two searches of one unit differ
  as much as two units do);
- superstimulus: median activation over the best activation of the run's exemplar sample;
- seconds per prototype on this machine.

Priors (each as its users run it):
- fourier: the engine's Lucid-style Fourier image, Adam lr 0.8 (the demo's before maco);
- maco: the phase-only prior with the run's magnitude spectrum and transformation
  robustness, Adam lr 0.3 (params.yaml);
- pixel: raw pixels, no prior, Adam lr 0.1;
- lucent: Lucent's render_vis recipe in this engine: its Fourier image initialised at
  0.01 N(0, 1), no evolution, Adam lr 0.05 for 512 steps with transformation robustness
  (its standard_transforms, scaled to the image).

    python bench/readability.py                      # this folder's demo run
    python bench/readability.py --run /path/to/run --markdown
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protoviz_core.checkpoints import list_checkpoints, load_backbone  # noqa: E402
from protoviz_core.config import load_params  # noqa: E402
from protoviz_core.distance import mask_weighted, unit_diversity  # noqa: E402
from protoviz_core.engine.generators import FourierGenerator, MacoGenerator, load_magnitude  # noqa: E402
from protoviz_core.engine.robustness import Robustness  # noqa: E402
from protoviz_core.engine.synthesis import synthesize  # noqa: E402
from protoviz_core.engine.units import channel_count, spaced_channels  # noqa: E402
from protoviz_core.exemplars import ExemplarSet  # noqa: E402
from protoviz_core.masks import load_masks  # noqa: E402
from protoviz_core.readability import score_layer, texture_features, unit_activations  # noqa: E402
from protoviz_core.stl10 import read_images  # noqa: E402


class LucentFourier(FourierGenerator):
    """Lucent's starting point: the Fourier image's spectrum initialised at 0.01 N(0, 1)."""

    def sample(self, keys: torch.Tensor, step: int = 0) -> torch.Tensor:
        return super().sample(keys, step) * 0.01


def priors(run: Path, size: int) -> dict[str, dict]:
    """name -> synthesize() options."""
    search = dict(cma_steps=5, cma_popsize=12, cma_sigma=1.0, adam_steps=30)
    return {
        "fourier": dict(generator="fourier", adam_lr=0.8, **search),
        "maco": dict(
            generator=MacoGenerator(load_magnitude(run / "out/spectrum.pt", size)),
            adam_lr=0.3,
            transforms=[Robustness()],
            **search,
        ),
        "pixel": dict(generator="pixel", adam_lr=0.1, **search),
        "lucent": dict(
            generator=LucentFourier(size),
            cma_steps=0,
            cma_popsize=4,
            cma_sigma=1.0,
            adam_steps=512,
            adam_lr=0.05,
            early_exit=False,
            redraw_dead=False,
            transforms=[Robustness()],
        ),
    }


def _specificity(images: torch.Tensor, mask: torch.Tensor) -> float:
    """images (2, C, 3, S, S) in [0, 1] -> re-evolution over between-unit mask-weighted distance."""
    vectors = mask_weighted(images.flatten(2), mask)  # (2, C, D)
    between = float((unit_diversity(vectors[0], "mse") + unit_diversity(vectors[1], "mse")).mean() / 2)
    again = float((vectors[0] - vectors[1]).square().mean(dim=1).mean())
    return again / between


def measure(run: Path, chosen: list[str] | None) -> pd.DataFrame:
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
    settings = params.readability
    rows = []
    for name, options in priors(run, size).items():
        if chosen and name not in chosen:
            continue
        for layer in params.extract.layers:
            channels = spaced_channels(channel_count(model, layer, size), params.extract.channels_per_layer)
            found, seconds = [], 0.0
            for seed in (0, 1):
                start = time.perf_counter()
                found.append(
                    synthesize(
                        model,
                        layer,
                        channels,
                        image_size=size,
                        seed=seed,
                        normalize=meta["normalize"],
                        read_unit=read_unit,
                        **options,
                    )
                )
                seconds += time.perf_counter() - start
            images = torch.stack([f.images for f in found])  # (2, C, 3, S, S)
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
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", type=Path, default=Path(__file__).resolve().parents[1], help="pipeline folder"
    )
    parser.add_argument("--priors", nargs="*", help="only these (fourier, maco, pixel, lucent)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args()
    torch.manual_seed(0)
    table = measure(args.run, args.priors)
    table["to_exemplars"] = table.readability / table.exemplars
    print(table.round(3).to_markdown(index=False) if args.markdown else table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
