"""The prototype engine: activation-maximising images for every channel of a layer at once.

Independent of the pipeline (it imports only torch, numpy and :mod:`protoviz_core.infra.errors`),
so it can synthesise prototypes for any ``nn.Module``:

- ``rng``            counter-based random streams, one per channel
- ``cmaes``          many independent (diagonal) CMA-ES instances as tensors
- ``generators``     image priors: DeePSiM fc6, Fourier, pixel
- ``units``          a channel of a layer, read at the centre; run only up to the layer
- ``normalization``  the ImageNet mean and standard deviation, and normalising with them
- ``precision``      where work runs under bfloat16 autocast
- ``robustness``     a random shift, zoom, turn and noise per gradient step
- ``synthesis``      CMA-ES then Adam for every channel at once: :func:`synthesize`, and
                     :class:`Procedure`, how it searches

May import: infra's errors only (tests/engine/test_independence.py).
"""
