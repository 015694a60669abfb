"""protoviz: watch features develop inside neural networks during training.

The library behind the DVC stages in ``stages/``, one concept per module, by phase:

- the engine, ``protoviz_core.engine``: prototypes for any network, independent of the
  pipeline (random streams, batched CMA-ES, generator priors, units, synthesis)
- params: ``config`` (the typed schema of params.yaml)
- data: ``stl10`` (the STL10 binary layout), ``synthetic`` (the offline set where shape,
  not colour, is the class), ``dataset`` (prepares either)
- training: ``simclr`` (backbone, projection head, augmentations), ``training`` (the
  resumable loop), ``checkpoints`` (per-epoch backbone files, safe loading)
- measuring checkpoints: ``probe`` (linear probes), ``rfield`` and ``masks`` (receptive
  fields and their masks), ``exemplars`` (each unit's top data-set images)
- prototypes: ``extraction`` (every checkpoint x layer x repeat, locally or on Ray),
  ``store`` (packed shards + Parquet index; ``open_prototypes``), ``superstimulus``
  (a prototype's activation over the best natural image's)
- measuring prototypes: ``networks`` and ``embedding`` (ImageNet embeddings),
  ``distance`` (diversity, rate of change, re-evolution consistency)
- showing: ``figures``, ``montage``, ``htmlpage``, ``atlas``, ``report``, and across
  runs ``comparison`` and ``aggregate``
- running: ``work`` (resumable work items), ``atomic`` (all-or-nothing writes),
  ``hashing`` (short identities), ``checks`` (refusing NaN or constant results),
  ``tracking`` and ``metric_keys`` (MLflow), ``dvc_files``, ``devices`` (one GPU per
  process), ``errors`` (``ProtovizError``, the base of every error a user can fix)
"""

import importlib
from typing import Any

# Public names, imported on first use (PEP 562): ``import protoviz_core.store`` runs only
# what the store needs, so each stage's import closure (its dvc.yaml deps) stays its own.
_PUBLIC = {
    "BatchedCMAES": "engine.cmaes",
    "Generator": "engine.generators",
    "Params": "config",
    "ParamsError": "config",
    "ProtovizError": "errors",
    "Prototypes": "engine.synthesis",
    "list_checkpoints": "checkpoints",
    "load_backbone": "checkpoints",
    "load_params": "config",
    "make_generator": "engine.generators",
    "open_prototypes": "store",
    "receptive_field": "rfield",
    "synthesize": "engine.synthesis",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'protoviz_core' has no attribute {name!r}")
    return getattr(importlib.import_module(f"protoviz_core.{_PUBLIC[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
