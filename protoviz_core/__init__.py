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
- ``errors``       ``ProtovizError``, the base of every error a user can fix
- ``atomic``       all-or-nothing file writes (torch files, images, text)
- ``dvc_files``    the metrics JSON and plot CSV files DVC shows
- ``work``         resumable per-checkpoint work: plan, prune, reuse, compute, collect
- ``metric_keys``  metric names (MLflow and DVC) and the distance view filter
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
- ``masks``        the rfmask stage's files: which mask serves which epoch
- ``networks``     the ImageNet networks prototypes are embedded in (names, read-outs)
- ``embedding``    prototypes in pixel space and ImageNet networks
- ``checks``       refuse NaN, all-zero or constant results before they are written
- ``distance``     diversity, rate of change, re-evolution consistency
- ``figures``      the paper's figures (matplotlib): curves per layer, montages
- ``htmlpage``     self-contained HTML pages (figures inlined)
- ``atlas``        the static prototype atlas: sprite sheets and a viewer
- ``report``       one run's report; the comparison of many
- ``comparison``   which MLflow runs to compare, and their metric histories
- ``aggregate``    mean +- SEM over seeds
- ``devices``      the compute device; one GPU per process (stages resolve it)
"""

import importlib
from typing import Any

# Public names, imported on first use (PEP 562): ``import protoviz_core.store`` runs only
# what the store needs, so each stage's import closure (its dvc.yaml deps) stays its own.
_PUBLIC = {
    "BatchedCMAES": "cmaes",
    "Generator": "generators",
    "Params": "config",
    "ParamsError": "config",
    "ProtovizError": "errors",
    "Prototypes": "synthesis",
    "list_checkpoints": "checkpoints",
    "load_backbone": "checkpoints",
    "load_params": "config",
    "make_generator": "generators",
    "open_prototypes": "store",
    "receptive_field": "rfield",
    "synthesize": "synthesis",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'protoviz_core' has no attribute {name!r}")
    return getattr(importlib.import_module(f"protoviz_core.{_PUBLIC[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
