import json
import os

import pytest
import torch

from protoviz_core.atomic import atomic_write, save_atomic
from protoviz_core.dvc_files import write_csv, write_json


def test_metrics_and_plot_tables_in_dvcs_formats(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": 0.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 0.5, "b": 1}
    write_csv(tmp_path / "p.csv", [{"epoch": 0, "loss": 1.5}, {"epoch": 1, "loss": 1.0}])
    assert (tmp_path / "p.csv").read_text().splitlines() == ["epoch,loss", "0,1.5", "1,1.0"]
    with pytest.raises(ValueError, match="no rows"):
        write_csv(tmp_path / "empty.csv", [])


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    write_json(tmp_path / "m.json", {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(tmp_path / "m.json") as f:
            f.write("{partial")
            raise RuntimeError("killed")
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["m.json"]
    save_atomic({"x": torch.ones(2)}, tmp_path / "t.pt")
    assert torch.load(tmp_path / "t.pt", weights_only=True)["x"].sum() == 2
    assert oct((tmp_path / "t.pt").stat().st_mode & 0o777) != oct(0o600)  # usual permissions, not mkstemp's
