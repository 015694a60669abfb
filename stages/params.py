"""params stage: validate all of params.yaml on every change to it, whichever stages would run.

Other stages validate the whole file when they run, but a key no stage depends on (a
typo such as ``sed: 2`` for ``seed``) would otherwise pass ``dvc repro`` silently. This
stage depends on the whole file and writes a file whose content never changes, so a
valid edit reruns nothing downstream.
"""

from __future__ import annotations

import sys

from protoviz_core.infra.atomic import atomic_write
from protoviz_core.pipeline.config import load_params
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--out", required=True, help="marker file written when the params are valid")
    args = p.parse_args(argv)
    load_params(args.params)  # a bad key or value: one line naming it (ParamsError), exit 2
    with atomic_write(args.out) as f:
        f.write("params.yaml is valid\n")


if __name__ == "__main__":
    sys.exit(_cli.run(main))
