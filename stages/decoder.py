"""decoder stage: the decoder image prior, a VAE trained on the training images.

python -m stages.decoder --data data/stl10_binary --out out/decoder.pt

Trains only when ``extract.generator`` is ``decoder``; otherwise it writes a file that says
so (DVC needs the output), which the generator refuses with the fix. See
protoviz_core/prototypes/decoder_prior.py.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from protoviz_core.engine.generators import DECODER_FORMAT
from protoviz_core.infra.atomic import save_atomic
from protoviz_core.infra.devices import resolve_device
from protoviz_core.models.learners import training_split
from protoviz_core.pipeline.config import load_params
from protoviz_core.prototypes.decoder_prior import save_decoder, train_on_split
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--data", required=True, help="stl10_binary folder (data stage output)")
    p.add_argument("--out", required=True, help="file for the trained decoder (torch, weights-only)")
    args = p.parse_args(argv)
    params = load_params(args.params)
    if params.extract.generator != "decoder":
        save_atomic({"format": DECODER_FORMAT, "unused": params.extract.generator}, args.out)
        print(f"decoder: not trained (extract.generator is {params.extract.generator})")
        return
    settings = params.decoder
    split = training_split(params.train.method)
    with tqdm(total=settings.epochs, desc="decoder", unit="epoch") as bar:
        decoder = train_on_split(
            args.data,
            split,
            params.data.image_size,
            settings,
            device=resolve_device(settings.device),
            on_epoch=lambda epoch, loss: (bar.update(), bar.set_postfix(loss=f"{loss:.1f}")),
        )
    save_decoder(args.out, decoder)
    print(f"decoder: a {settings.latent_dim}-d VAE decoder of the {split} images -> {args.out}")


if __name__ == "__main__":
    sys.exit(_cli.run(main))
