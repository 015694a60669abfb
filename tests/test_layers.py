"""protoviz_core is cut by phase, and imports run one way: down the layers.

Each subpackage may import its own modules and the subpackages below it in :data:`LAYERS`,
never one above: the presentation reads measures, measures never draw; the params schema
knows the learners, the learners never read params. The check reads every import of the
source, those inside functions too.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "protoviz_core"
# Bottom to top. The engine imports only infra's errors (tests/engine/test_independence.py).
LAYERS = (
    "infra",
    "engine",
    "models",
    "pipeline",
    "data",
    "training",
    "prototypes",
    "measures",
    "presentation",
)


def _public_homes() -> dict[str, str]:
    """protoviz_core's lazily exported names (``from protoviz_core import load_params``) and the
    subpackage each comes from."""
    import protoviz_core

    return {name: module.split(".")[0] for name, module in protoviz_core._PUBLIC.items()}


def upward_imports(package: str, source: str) -> list[str]:
    """The protoviz_core subpackages above ``package`` that ``source`` (a module of it) imports,
    directly or through a lazily exported name; a relative import counts as one (every import
    here is absolute, so that this check sees it)."""
    allowed, homes = set(LAYERS[: LAYERS.index(package) + 1]), _public_homes()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append("." * node.level + (node.module or ""))
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "protoviz_core":
            names = [
                f"protoviz_core.{homes.get(alias.name, alias.name)}.{alias.name}" for alias in node.names
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "protoviz_core" and len(parts) > 1 and parts[1] in LAYERS:
                if parts[1] not in allowed:
                    found.append(name)
    return found


def test_every_module_lives_in_a_phase_and_every_phase_is_a_layer():
    flat = [path.name for path in LIBRARY.glob("*.py") if path.name != "__init__.py"]
    assert flat == []
    packages = {path.parent.name for path in LIBRARY.glob("*/__init__.py")}
    assert packages == set(LAYERS)


@pytest.mark.parametrize("package", LAYERS)
def test_a_phase_says_what_it_holds_and_what_it_may_import(package):
    doc = importlib.import_module(f"protoviz_core.{package}").__doc__ or ""
    assert doc.count("\n") >= 2 and "May import" in doc, package


@pytest.mark.parametrize("package", LAYERS)
def test_imports_run_down_the_layers(package):
    upward = {
        path.relative_to(LIBRARY).as_posix(): upward_imports(package, path.read_text())
        for path in sorted((LIBRARY / package).rglob("*.py"))
    }
    assert {module: names for module, names in upward.items() if names} == {}


def test_the_check_sees_an_import_up_the_layers_even_inside_a_function():
    source = (
        "from protoviz_core.infra.errors import ProtovizError\n"
        "def draw():\n"
        "    import protoviz_core.presentation.report\n"
    )
    assert upward_imports("measures", source) == ["protoviz_core.presentation.report"]
    assert upward_imports("presentation", source) == []


def test_the_check_sees_a_lazily_exported_name_and_a_relative_import():
    assert upward_imports("data", "from protoviz_core import load_params, synthesize\n") == []
    assert upward_imports("models", "from protoviz_core import load_params\n") == [
        "protoviz_core.pipeline.load_params"
    ]
    assert upward_imports("measures", "from . import masks\n") == ["."]


FUNCTION_LINES, CLASS_LINES = 80, 150  # a function or class longer than this is two concepts


def test_no_function_or_class_in_the_library_is_longer_than_a_reader_can_hold():
    too_long = []
    modules = sorted(LIBRARY.rglob("*.py"))
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text())):
            limit = {ast.FunctionDef: FUNCTION_LINES, ast.ClassDef: CLASS_LINES}.get(type(node))
            if limit and node.end_lineno - node.lineno + 1 > limit:
                too_long.append(
                    f"{path.relative_to(LIBRARY)}:{node.name} ({node.end_lineno - node.lineno + 1})"
                )
    assert len(modules) > 40 and too_long == []
