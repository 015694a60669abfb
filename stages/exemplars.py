"""exemplars stage: each extracted unit's top images of a fixed sample of the data set, per checkpoint.

python -m stages.exemplars --data data/stl10_binary --checkpoints out/checkpoints --out out/exemplars
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from protoviz_core.infra.devices import resolve_device
from protoviz_core.infra.work import run_work
from protoviz_core.measures.exemplars import Pool, exemplar_work, sample_positions
from protoviz_core.pipeline.config import load_params
from protoviz_core.pipeline.tracking import pipeline_run
from protoviz_core.training.checkpoints import choose_epochs, require_checkpoints
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--data", required=True, help="stl10_binary folder (data stage output)")
    p.add_argument("--checkpoints", required=True, help="folder of epoch_XXXX.pt (train stage output)")
    p.add_argument("--out", required=True, help="folder for e{epoch}.pt exemplar files")
    args = p.parse_args(argv)
    params = load_params(args.params)
    settings = params.exemplars
    checkpoints = require_checkpoints(args.checkpoints)
    # The checkpoints that get prototypes.
    epochs = choose_epochs(list(checkpoints), params.extract.epochs, params_file=args.params)
    pool = Pool(Path(args.data), tuple(settings.splits), params.data.image_size)
    positions = sample_positions(sum(pool.sizes()), settings.images, settings.seed)
    items = exemplar_work(
        {e: checkpoints[e] for e in epochs},
        pool,
        positions,
        params.extract.layers,
        top_k=settings.top_k,
        batch_size=settings.batch_size,
        device=resolve_device(settings.device),
        read_unit=params.read_unit,
    )
    print(
        f"exemplars: the top {settings.top_k} of {len(positions)} images "
        f"from {', '.join(settings.splits)} for every unit "
        f"of {', '.join(params.extract.layers)}"
    )
    with pipeline_run(params, "exemplars"), tqdm(total=len(items), desc="exemplars", unit="ckpt") as bar:
        run_work(items, args.out, on_done=lambda item, reused: bar.update())


if __name__ == "__main__":
    sys.exit(_cli.run(main))
