"""protoviz: watch features develop inside neural networks during training.

The library behind the DVC stages in ``stages/``, one concept per module, in subpackages by
phase. Imports run down this list, never up (tests/test_layers.py):

- ``presentation``: figures, the report, the atlas, the comparison of runs
- ``measures``: probes, receptive fields and masks, exemplars, embeddings, distances,
  readability, similarity
- ``prototypes``: the decoder prior, extraction, the store, the superstimulus ratio
- ``training``: the resumable loop (a plan, then a run), refilling holes, checkpoints
- ``data``: STL10, the offline synthetic set, the data's spectrum
- ``pipeline``: the params schema, metric names, the MLflow run
- ``models``: backbones, the learners' registry, the pretrained ImageNet networks
- ``engine``: prototypes for any network, independent of the pipeline (random streams,
  batched CMA-ES, generator priors, units, the synthesis procedure)
- ``infra``: errors, identities, safe writes, refusing garbage, resumable work, devices

Each subpackage's docstring says what it holds and what it may import.
"""

import importlib
from typing import Any

# Public names, imported on first use (PEP 562): ``import protoviz_core.prototypes.store`` runs only
# what the store needs, so each stage's import closure (its dvc.yaml deps) stays its own.
_PUBLIC = {
    "BatchedCMAES": "engine.cmaes",
    "Generator": "engine.generators",
    "Params": "pipeline.config",
    "ParamsError": "pipeline.config",
    "Procedure": "engine.synthesis",
    "ProtovizError": "infra.errors",
    "Prototypes": "engine.synthesis",
    "list_checkpoints": "training.checkpoints",
    "load_backbone": "training.checkpoints",
    "load_params": "pipeline.config",
    "make_generator": "engine.generators",
    "open_prototypes": "prototypes.store",
    "receptive_field": "measures.rfield",
    "synthesize": "engine.synthesis",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'protoviz_core' has no attribute {name!r}")
    return getattr(importlib.import_module(f"protoviz_core.{_PUBLIC[name]}"), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
