"""The Examples in the main API's docstrings run and show what they say (doctest)."""

import doctest

import pytest

from protoviz_core.engine import cmaes, synthesis
from protoviz_core.prototypes import store


@pytest.mark.parametrize(
    "module, name",
    [(synthesis, "synthesize"), (store, "open_prototypes"), (cmaes, "BatchedCMAES")],
    ids=["synthesize", "open_prototypes", "BatchedCMAES"],
)
def test_the_docstring_examples_run_as_written(module, name):
    tests = doctest.DocTestFinder(recurse=False).find(getattr(module, name), name, globs=dict(vars(module)))
    examples = [test for test in tests if test.examples]
    assert examples, f"{name} has no Examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in examples:
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
