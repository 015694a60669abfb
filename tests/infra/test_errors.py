"""Every error a user can fix is a ProtovizError, and the CLI prints it as one line."""

import pytest

from protoviz_core.data.stl10 import DatasetError
from protoviz_core.infra.checks import DegenerateError
from protoviz_core.infra.devices import DeviceError
from protoviz_core.infra.errors import ProtovizError
from protoviz_core.measures.embedding import WeightsError
from protoviz_core.measures.masks import MaskError
from protoviz_core.pipeline.config import ParamsError
from protoviz_core.presentation.comparison import ComparisonError
from protoviz_core.presentation.report import ReportError
from protoviz_core.training.checkpoints import CheckpointError
from stages import _cli


@pytest.mark.parametrize(
    "error",
    [
        CheckpointError,
        DegenerateError,
        ComparisonError,
        ParamsError,
        DeviceError,
        WeightsError,
        MaskError,
        ReportError,
        DatasetError,
    ],
)
def test_user_errors_share_the_base_and_print_as_one_line(error, capsys):
    assert issubclass(error, ProtovizError)

    def main(argv):
        raise error("params.yaml: train.lr: must be > 0")

    assert _cli.run(main, []) == 2
    assert capsys.readouterr().err == "error: params.yaml: train.lr: must be > 0\n"


def test_a_bug_keeps_its_traceback():
    def main(argv):
        raise KeyError("bug")

    with pytest.raises(KeyError):
        _cli.run(main, [])
