"""Infrastructure every phase uses: ``errors`` (``ProtovizError``, the base of every error a
user can fix), ``hashing`` (short identities), ``atomic`` (all-or-nothing writes), ``checks``
(refusing NaN, infinite or constant results), ``work`` (resumable work items), ``devices``
(one GPU per process), ``interrupts`` (Ctrl-C and SIGTERM), ``dvc_files`` (DVC's metrics and
plots files).

May import: nothing of protoviz_core but its own modules. The bottom layer.
"""
