"""dvc.yaml is the truth about inputs: every stage lists exactly the code it runs.

Each stage's command is ``python -m stages.<name>``; the code it runs is that file,
``stages/_cli.py``, both packages' ``__init__.py`` and every ``protoviz_core`` module it
imports, directly or through other modules (imports inside functions count too), plus
the data files those modules read. ``dvc repro`` reruns a stage when one of its deps
changes, so a missing dep serves stale results and an extra one reruns work for nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "protoviz_core"
# Files other than Python that a module reads at run time.
DATA_FILES = {"protoviz_core/presentation/atlas.py": ["protoviz_core/presentation/atlas_viewer.html"]}


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def _imported_modules(path: Path) -> set[str]:
    """protoviz_core and stages modules ``path`` imports, as repository-relative file paths."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] not in ("protoviz_core", "stages"):
                continue
            parts = name.split(".")
            # A module runs the __init__.py of every package above it (protoviz_core/engine/...).
            for depth in range(1, len(parts) + 1):
                package = ROOT.joinpath(*parts[:depth], "__init__.py")
                if package.is_file():
                    found.add(package.relative_to(ROOT).as_posix())
            candidate = ROOT / (name.replace(".", "/") + ".py")
            if candidate.is_file():
                found.add(candidate.relative_to(ROOT).as_posix())
    return found


def code_closure(module: str) -> set[str]:
    """Every repository file that running ``module`` (``stages/train.py``) executes or reads."""
    closure = {"protoviz_core/__init__.py", "stages/__init__.py"}
    todo = [module]
    while todo:
        path = todo.pop()
        if path in closure:
            continue
        closure.add(path)
        closure.update(DATA_FILES.get(path, []))
        todo.extend(_imported_modules(ROOT / path) - closure)
    return closure


def _stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_dvc_yaml_lists_exactly_the_code_each_stage_runs(stage):
    spec = _stages()[stage]
    assert spec["cmd"].startswith(f"python -m stages.{stage} ")
    assert len(spec["deps"]) == len(set(spec["deps"])), f"{stage}: a dep is listed twice"
    listed = {dep for dep in spec["deps"] if dep.startswith(("protoviz_core/", "stages/"))}
    needed = code_closure(f"stages/{stage}.py")
    assert sorted(needed - set(listed)) == [], f"{stage}: dvc.yaml misses code deps"
    assert sorted(set(listed) - needed) == [], f"{stage}: dvc.yaml lists code the stage does not run"


def test_every_library_data_file_is_attributed_to_its_module():
    data = {
        p.relative_to(ROOT).as_posix()
        for p in LIBRARY.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    }
    assert data == {f for files in DATA_FILES.values() for f in files}


def test_the_package_init_imports_no_module_eagerly():
    """protoviz_core/__init__.py is in every stage's deps; it must not pull the library into every stage."""
    assert _imported_modules(LIBRARY / "__init__.py") == set()


def test_closure_follows_imports_inside_functions(tmp_path):
    """An import run only when a function is called still counts."""
    module = tmp_path / "late.py"
    module.write_text("def build():\n    from protoviz_core.models.backbones import build_backbone\n")
    assert "protoviz_core/models/backbones.py" in _imported_modules(module)


@pytest.mark.parametrize("config", ["params.yaml", "configs/paper.yaml"])
def test_every_param_a_stage_depends_on_is_in_each_committed_configuration(config):
    """DVC hashes a stage's params from the file itself: a key missing there stops ``dvc repro``
    (MissingParamsError), whatever the schema's defaults, e.g. after cp configs/paper.yaml params.yaml."""
    values = yaml.safe_load((ROOT / config).read_text())
    missing = []
    for stage, spec in _stages().items():
        for key in spec.get("params", []):
            if isinstance(key, dict):  # {file: null}: the whole file (the params stage)
                continue
            node = values
            for part in str(key).split("."):
                if not isinstance(node, dict) or part not in node:
                    missing.append(f"{stage}: {key}")
                    break
                node = node[part]
    assert missing == []


def test_the_tests_run_each_stage_with_dvc_yamls_arguments():
    """tests/helpers.STAGE_ARGS is dvc.yaml's commands, the data folder aside (data/, not
    data/stl10_binary); a renamed output in one and not the other fails here."""
    import shlex

    from tests.helpers import STAGE_ARGS

    differences = {}
    for name, args in STAGE_ARGS.items():
        command = shlex.split(_stages()[name]["cmd"])[3:]  # after "python -m stages.<name>"
        in_yaml = dict(zip(command[::2], command[1::2]))
        in_tests = {
            key: "data/stl10_binary" if value == "data" else value
            for key, value in zip(args[::2], args[1::2])
        }
        if in_yaml != in_tests:
            differences[name] = (in_yaml, in_tests)
    assert len(STAGE_ARGS) >= 10 and differences == {}
