"""Training a backbone with its learner: ``loop`` (``train_learner``: a plan, then a
``TrainingRun`` that owns model, optimiser and losses), ``plan`` (Finished, Fresh, Resume or
Refill, decided from the files on disk), ``replay`` (making lost checkpoints again),
``views`` (the augmented views a learner trains on), ``diagnosis`` (a run that learned
nothing: loss at chance, collapsed features) and ``checkpoints`` (one backbone file per
epoch, loaded without pickled code).

May import: data, pipeline, models, engine, infra.
"""
