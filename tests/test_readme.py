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
