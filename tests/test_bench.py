"""bench/: every script is listed in its README with the command that runs it, and imports."""

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*/*.py") if p.name != "__init__.py")


def test_bench_readme_lists_every_script_with_its_command():
    readme = (BENCH / "README.md").read_text()
    unlisted = [
        str(p.relative_to(BENCH))
        for p in SCRIPTS
        if f"python -m bench.{p.parent.name}.{p.stem}" not in readme
    ]
    unlisted += [
        str(p.relative_to(BENCH))
        for p in BENCH.glob("*/*.sh")
        if f"bash bench/{p.parent.name}/{p.name}" not in readme
    ]
    assert SCRIPTS and unlisted == []


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}.{p.stem}")
def test_every_benchmark_imports_as_a_module_of_the_package(script):
    """Run as python -m bench.<group>.<name> from the root: no sys.path edits, no missing helper."""
    assert "sys.path" not in script.read_text()
    importlib.import_module(f"bench.{script.parent.name}.{script.stem}")
