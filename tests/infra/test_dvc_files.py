import json

import pytest

from protoviz_core.infra.dvc_files import write_csv, write_json


def test_metrics_and_plot_tables_in_dvcs_formats(tmp_path):
    write_json(tmp_path / "m.json", {"b": 1, "a": 0.5})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": 0.5, "b": 1}
    write_csv(tmp_path / "p.csv", [{"epoch": 0, "loss": 1.5}, {"epoch": 1, "loss": 1.0}])
    assert (tmp_path / "p.csv").read_text().splitlines() == ["epoch,loss", "0,1.5", "1,1.0"]
    with pytest.raises(ValueError, match="no rows"):
        write_csv(tmp_path / "empty.csv", [])
