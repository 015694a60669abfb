"""What every stage shares: argument parsing basics and one clear error on bad input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from protoviz_core.infra.errors import ProtovizError
from protoviz_core.infra.interrupts import TERMINATED_STATUS, exit_status, interrupted, sigterm_raises


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="the pipeline's params file")
    return p


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Call a stage's ``main``; a user error (:class:`ProtovizError`) prints one line and exits with status 2.

    Stopped by Ctrl-C or SIGTERM (:func:`~protoviz_core.infra.interrupts.interrupted`, whatever its
    workers' deaths raised meanwhile), it prints one line and exits 130 or 143; what was
    finished is kept and a rerun resumes from it.
    """
    try:
        with sigterm_raises():
            main(argv)
    except BaseException as exc:
        if interrupted(exc):
            status = exit_status(exc)
            how = "terminated (SIGTERM)" if status == TERMINATED_STATUS else "interrupted"
            print(f"{how}; finished work is kept and a rerun resumes from it", file=sys.stderr)
            return status
        if isinstance(exc, ProtovizError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    return 0
