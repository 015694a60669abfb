"""The engine stands alone: importing it loads nothing of the pipeline (nor lightly, nor MLflow)."""

import subprocess
import sys
from pathlib import Path

ENGINE_MODULES = sorted(
    path.stem
    for path in (Path(__file__).resolve().parents[2] / "protoviz_core" / "engine").glob("*.py")
    if path.stem != "__init__"
)


def test_the_engine_imports_nothing_of_the_pipeline():
    assert len(ENGINE_MODULES) >= 8  # every module of engine/, found on disk
    imports = "; ".join(f"import protoviz_core.engine.{name}" for name in ENGINE_MODULES)
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys; {imports}; print('\\n'.join(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ours = {name for name in loaded if name.split(".")[0] in ("protoviz_core", "stages")}
    engine = {"protoviz_core.engine", *(f"protoviz_core.engine.{name}" for name in ENGINE_MODULES)}
    # protoviz_core itself (lazy exports only) and infra's errors (the base of every user-facing error).
    assert ours == engine | {"protoviz_core", "protoviz_core.infra", "protoviz_core.infra.errors"}
    assert not {"lightly", "mlflow", "pandas", "dvc"} & {name.split(".")[0] for name in loaded}
