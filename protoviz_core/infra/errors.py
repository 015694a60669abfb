"""The one base class for errors a user can fix.

Each module raises its own subclass (``ParamsError``, ``CheckpointError``, ...) with a
message that names the key or file, what is wrong, and the fix. The stage CLI prints
any :class:`ProtovizError` as that one line (exit status 2), without a traceback;
anything else is a bug and keeps its traceback.
"""


class ProtovizError(Exception):
    """Bad input, missing files or degenerate results; the message says how to fix it."""


class MissingInputError(ProtovizError, FileNotFoundError):
    """An earlier stage's output is missing, unreadable or inconsistent; names it and the stage to rerun."""
