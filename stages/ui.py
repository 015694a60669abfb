"""Open the MLflow UI on the runs: start ``mlflow server`` on this repository's database and
print the address of the protoviz experiment's runs and charts.

    python -m stages.ui                 # http://127.0.0.1:5000/#/experiments/<id>/runs?...
    python -m stages.ui --port 5050

(A plain ``mlflow ui`` opens MLflow 3's GenAI overview; the printed address opens the
runs instead, as charts grouped by metric prefix: train/, probe/, diversity/, ...)
"""

from __future__ import annotations

import os
import shutil
import sys

from mlflow.tracking import MlflowClient

from protoviz_core.infra.errors import MissingInputError
from protoviz_core.pipeline.mlflow_store import EXPERIMENT_NAME, runs_url, tracking_uri
from stages import _cli


def main(argv=None) -> None:
    p = _cli.parser(__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    args = p.parse_args(argv)
    uri = tracking_uri()
    experiment = MlflowClient(uri).get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        raise MissingInputError(
            f"{uri}: no protoviz experiment yet; run the pipeline first (make demo or dvc repro)"
        )
    print(f"open {runs_url(f'http://{args.host}:{args.port}', experiment.experiment_id)}", flush=True)
    mlflow = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    os.execv(
        mlflow, [mlflow, "server", "--backend-store-uri", uri, "--host", args.host, "--port", str(args.port)]
    )


if __name__ == "__main__":
    sys.exit(_cli.run(main))
