"""Benchmark: the logistic-regression probe's solver, lbfgs (sklearn's default) against newton-cg.

The L2-regularised multinomial logistic regression is strictly convex, so both solvers
aim at the same optimum; this measures, on the demo's cached probe features (every
checkpoint in ``out/probe_features``), how long each takes and how far their test
accuracies are apart.

    python -m bench.choices.probe_solver
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from protoviz_core.data.stl10 import read_labels
from protoviz_core.measures.probe import standardise
from protoviz_core.pipeline.config import load_params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--features", default="out/probe_features")
    p.add_argument("--data", default="data/stl10_binary")
    args = p.parse_args()
    settings = load_params().probe
    train_labels, test_labels = read_labels(args.data, "train"), read_labels(args.data, "test")
    print(
        "| checkpoint | lbfgs s | lbfgs iterations | lbfgs accuracy | "
        "newton-cg s | newton-cg iterations | newton-cg accuracy |"
    )
    print("|---|---|---|---|---|---|---|")
    totals = {"lbfgs": 0.0, "newton-cg": 0.0}
    for path in sorted(Path(args.features).glob("*.pt")):
        stored = torch.load(path, weights_only=True)
        train, test = standardise(stored["train"].numpy(), stored["test"].numpy())
        cells = []
        for solver in ("lbfgs", "newton-cg"):
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = LogisticRegression(
                    C=settings.logreg_c, max_iter=settings.logreg_max_iter, solver=solver
                )
                model.fit(train, train_labels)
            seconds = time.perf_counter() - started
            totals[solver] += seconds
            cells += [
                f"{seconds:.2f}",
                str(int(model.n_iter_.max())),
                f"{model.score(test, test_labels):.4f}",
            ]
        print(f"| {path.name} | " + " | ".join(cells) + " |")
    print(f"\ntotal: lbfgs {totals['lbfgs']:.1f} s, newton-cg {totals['newton-cg']:.1f} s")


if __name__ == "__main__":
    main()
