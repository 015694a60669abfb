"""protoviz: watch features develop inside neural networks during training.

The library behind the DVC stages in ``stages/``. Modules, one concept each:

- ``config``       the typed schema of params.yaml
- ``stl10``        the STL10 binary layout (reader and writer)
- ``synthetic``    an offline STL10-like set where shape, not colour, is the class
- ``dataset``      prepare real or synthetic data for the pipeline
- ``simclr``       backbone, projection head and augmentations (lightly)
- ``training``     the resumable SimCLR training loop
- ``checkpoints``  per-epoch backbone files: atomic writes, safe loading
- ``tracking``     one MLflow run per pipeline run
- ``outputs``      atomic writes of metrics and plot tables
"""

from protoviz_core.checkpoints import load_backbone, list_checkpoints
from protoviz_core.config import Params, ParamsError, load_params

__all__ = ["Params", "ParamsError", "load_params", "load_backbone", "list_checkpoints"]
