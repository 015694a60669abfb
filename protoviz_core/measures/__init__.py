"""Measuring checkpoints and their prototypes: ``probe`` (linear probes), ``rfield`` and
``masks`` (receptive fields and their masks), ``exemplars`` (each unit's top images),
``embedding`` (prototypes in pretrained networks), ``distance`` (diversity, rate of change,
re-evolution consistency), ``readability`` (the machine 2-AFC), ``similarity`` (linear CKA,
matching units across runs) and ``neighbours`` (units that respond alike).

May import: prototypes, training, data, pipeline, models, engine, infra.
"""
