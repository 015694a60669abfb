"""The README's Python example runs as written and prints what its comments say."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_synthesis_example_runs_and_prints_the_shapes_it_promises():
    example = next(block for block in _python_blocks() if "synthesize(" in block)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(example, str(README), "exec"), {})
    lines = printed.getvalue().splitlines()
    assert lines[0] == "torch.Size([8, 3, 64, 64])"
    assert lines[1].startswith("tensor([") and len(re.findall(r"-?\d+\.\d+", printed.getvalue())) == 8


def test_every_probe_table_in_the_readme_is_the_committed_comparison_it_names():
    """Each row ``| `condition` ... | logreg | LinearSVC | Adam |`` equals, to 3 decimals, the
    means in the ``results/<folder>/final_probe.csv`` the README names last before the table."""
    import pandas as pd

    text = README.read_text()
    row = re.compile(r"^\| `([^`]+)`[^|]*\| (\d\.\d{3}) \| (\d\.\d{3}) \| (\d\.\d{3}) \|$", re.M)
    checked = 0
    for match in row.finditer(text):
        source = re.findall(r"results/[\w-]+/final_probe\.csv", text[: match.start()])[-1]
        final = pd.read_csv(README.parent / source).set_index(["condition", "readout"])["mean"]
        for readout, shown in zip(("logreg", "linearsvc", "adam"), match.groups()[1:]):
            assert f"{final[(match[1], readout)]:.3f}" == shown, (source, match[1], readout)
        checked += 1
    assert checked >= 2  # the demo grid's two conditions at least
