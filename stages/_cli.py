"""What every stage shares: argument parsing basics and one clear error on bad input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from protoviz_core.errors import ProtovizError


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="the pipeline's params file")
    return p


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Call a stage's ``main``; a user error (:class:`ProtovizError`) prints one line and exits with status 2,
    Ctrl-C one line and status 130 (what was finished is kept: a rerun resumes)."""
    try:
        main(argv)
    except ProtovizError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a rerun resumes from it", file=sys.stderr)
        return 130
    return 0
