"""Whether a finished training run learned anything: its loss at its learner's chance level
(:func:`learned_nothing`), or its features all pointing one way (:func:`collapsed`). Each gives
one warning line for the train stage, naming the params to look at.
"""

from __future__ import annotations

import torch

from protoviz_core.models.learners import learner_class

CHANCE_MARGIN = 0.1  # nats: a final loss closer than this to chance's is a network that learned nothing


def learned_nothing(method: str, final_loss: float | None, batch_size: int) -> str | None:
    """A one-line warning when a run's final loss ends within :data:`CHANCE_MARGIN` nats of its
    learner's chance level (:meth:`Learner.chance_loss`), else None.

    Such a network tells its inputs apart no better than constant outputs do, yet every later
    stage would measure it as if it had learned. Causes: too high a learning rate (SGD diverges
    in the first epoch and settles at uniform outputs), or, for SimCLR, too soft a temperature
    for views that colour jitter makes hard to match (the offline demo at temperature 0.5:
    ``bench/choices/demo_training.py``). The warning names the learner's params to look at.

    Raises:
        ValueError: an unknown method; names ``train.method``.
    """
    learner = learner_class(method)
    chance = learner.chance_loss(batch_size)
    if chance is None or final_loss is None or final_loss < chance - CHANCE_MARGIN:
        return None
    return (
        f"train: warning: the {method} loss ends at {final_loss:.3f}, chance's is {chance:.3f} "
        f"(within {CHANCE_MARGIN} nats): the network learned nothing; look at "
        f"{', '.join(learner.tuning_params)}"
    )


# The spread (mean over dimensions of the standard deviation across images) of unit-length
# backbone features below which a network maps every image to one direction. Measured on the
# tiny training of tests/stages/test_train.py's scale, 3 epochs: every learner at train.lr 1000
# gave 1e-13 .. 2e-9 (float rounding), every learner at 0.06 gave 5e-6 .. 1e-2.
COLLAPSE_SPREAD = 1e-7


def collapsed(method: str, features: torch.Tensor, lr: float) -> str | None:
    """A one-line warning when ``features`` (N, D) of N >= 2 different training images all point
    one way (:data:`COLLAPSE_SPREAD`), else None.

    Collapse is the failure that a loss at chance's level does not show: BYOL's and SimSiam's
    losses fall to -1 when both branches give one constant vector, DINO's towards 0 when one
    output dimension dominates. All-zero features (every unit dead) count as collapsed.
    """
    unit = torch.nn.functional.normalize(features.double(), dim=1)
    spread = float(unit.std(dim=0).mean())
    if spread >= COLLAPSE_SPREAD:
        return None
    return (
        f"train: warning: the {method} network gives all {len(features)} training images checked the "
        f"same features (spread {spread:.1e} < {COLLAPSE_SPREAD:g}): it collapsed and learned nothing; "
        f"lower train.lr (now {lr:g})"
    )
