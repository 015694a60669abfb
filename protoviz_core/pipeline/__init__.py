"""What every stage of the DVC pipeline shares: ``config`` (the typed schema of params.yaml,
whose errors name the key), ``metric_keys`` (the names of MLflow metrics), and the MLflow run:
``tracking`` (what a stage opens: ``pipeline_run``), ``run_identity`` (the run's name and
tags) and ``mlflow_store`` (the database and its SQLite specifics).

May import: models, engine, infra.
"""
