"""spectrum stage: the training images' mean Fourier magnitude, the maco prior's fixed part.

python -m stages.spectrum --data data/stl10_binary --out out/spectrum.pt
"""

from __future__ import annotations

import sys

from protoviz_core.data.spectrum import measure_spectrum, save_spectrum
from protoviz_core.models.learners import training_split
from protoviz_core.pipeline.config import load_params
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--data", required=True, help="stl10_binary folder (data stage output)")
    p.add_argument("--out", required=True, help="file for the magnitude spectrum (torch, weights-only)")
    args = p.parse_args(argv)
    params = load_params(args.params)
    split = training_split(params.train.method)
    magnitude = measure_spectrum(args.data, split, params.data.image_size)
    save_spectrum(args.out, magnitude)
    print(f"spectrum: the mean magnitude of {split} images, {tuple(magnitude.shape)} -> {args.out}")


if __name__ == "__main__":
    sys.exit(_cli.run(main))
