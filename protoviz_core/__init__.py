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
- ``units``        a channel of a layer, read at the centre; run only up to the layer
- ``rng``          counter-based random streams, one per channel
- ``cmaes``        many independent (diagonal) CMA-ES instances as tensors
- ``generators``   image priors: DeePSiM fc6, Fourier, pixel
- ``synthesis``    batched prototypes: CMA-ES then Adam for every channel at once
- ``store``        packed prototype shards + Parquet index; ``open_prototypes``
- ``extraction``   every checkpoint x layer x repeat, shard by shard, local or on Ray
- ``montage``      image grids
- ``probe``        linear probes on frozen features
- ``rfield``       gradient receptive fields and fitted Gaussian masks
- ``embedding``    prototypes in pixel space and ImageNet networks
- ``checks``       refuse NaN, all-zero or constant results before they are written
- ``distance``     diversity, rate of change, re-evolution consistency
- ``figures``      the paper's figures (matplotlib): curves per layer, montages
- ``htmlpage``     self-contained HTML pages (figures inlined)
- ``atlas``        the static prototype atlas: sprite sheets and a viewer
- ``report``       one run's report; the comparison of many
- ``comparison``   which MLflow runs to compare; mean +- SEM over seeds
- ``devices``      the compute device; one GPU per process
"""

from protoviz_core.checkpoints import list_checkpoints, load_backbone
from protoviz_core.cmaes import BatchedCMAES
from protoviz_core.config import Params, ParamsError, load_params
from protoviz_core.generators import Generator, make_generator
from protoviz_core.rfield import receptive_field
from protoviz_core.store import open_prototypes
from protoviz_core.synthesis import Prototypes, synthesize

__all__ = [
    "BatchedCMAES", "Generator", "Params", "ParamsError", "Prototypes", "list_checkpoints",
    "load_backbone", "load_params", "make_generator", "open_prototypes", "receptive_field", "synthesize",
]
