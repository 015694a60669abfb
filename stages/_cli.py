"""What every stage shares: argument parsing basics and one clear error on bad input."""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from protoviz_core.checkpoints import CheckpointError
from protoviz_core.checks import DegenerateError
from protoviz_core.comparison import ComparisonError
from protoviz_core.config import ParamsError
from protoviz_core.devices import DeviceError
from protoviz_core.embedding import WeightsError
from protoviz_core.report import ReportError
from protoviz_core.stl10 import DatasetError

# Errors whose message already says what is wrong and how to fix it: no traceback.
USER_ERRORS = (
    ParamsError, DatasetError, CheckpointError, DeviceError, ReportError, ComparisonError, WeightsError,
    DegenerateError,
)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="the pipeline's params file")
    return p


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Call a stage's ``main``; a user error prints one line and exits with status 2."""
    try:
        main(argv)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
