"""Prototypes of every checkpoint: ``decoder_prior`` (the demo's generator prior, trained on
the run's images), ``extraction`` (every checkpoint x layer x repeat, locally or on Ray),
``store`` (packed shards and a Parquet index; ``open_prototypes``) and ``superstimulus`` (a
prototype's activation over the best natural image's).

May import: training, data, pipeline, models, engine, infra.
"""
