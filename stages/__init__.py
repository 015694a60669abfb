"""One thin command-line entry point per DVC stage (see dvc.yaml)."""
