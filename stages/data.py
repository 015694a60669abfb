"""data stage: write the training data set (STL10 or synthetic) in the STL10 binary layout."""

from __future__ import annotations

import sys

from tqdm import tqdm

from protoviz_core.data.dataset import prepare_dataset
from protoviz_core.pipeline.config import load_params
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--out", required=True, help="folder to receive the stl10_binary files")
    args = p.parse_args(argv)
    params = load_params(args.params)
    data = params.data
    total = data.synthetic.n_unlabeled + data.synthetic.n_train + data.synthetic.n_test
    with tqdm(
        total=total if data.name == "synthetic" else None, desc=f"data ({data.name})", unit="img"
    ) as bar:
        prepare_dataset(data, args.out, progress=bar.update)


if __name__ == "__main__":
    sys.exit(_cli.run(main))
