"""Training a backbone with its learner: ``training`` (the resumable loop: a plan, then a run)
and ``checkpoints`` (one backbone file per epoch, loaded without pickled code), with the
modules that resume and refill a run.

May import: data, pipeline, models, engine, infra.
"""
