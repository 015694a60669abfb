"""Ctrl-C and SIGTERM: a stage that is stopped ends with one line, and its MLflow run as KILLED.

SIGTERM (``kill``, ``dvc queue kill``, a scheduler's stop) is turned into :class:`Terminated`
while :func:`sigterm_raises` is active, so ``finally`` blocks and context managers run as for
Ctrl-C. A signal sent to the whole process group also stops a DataLoader's or Ray's workers;
the main process may then meet *their* deaths first ("DataLoader worker ... is killed by
signal"), an exception raised while it handles, or before it sees, its own. :func:`interrupted`
therefore answers from the signal's arrival, not only from the exception's type.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

TERMINATED_STATUS = 128 + signal.SIGTERM  # 143: the shell's status of a process ended by SIGTERM
INTERRUPTED_STATUS = 128 + signal.SIGINT  # 130


class Terminated(SystemExit):
    """SIGTERM, raised in the main thread; exits with :data:`TERMINATED_STATUS`."""

    def __init__(self):
        super().__init__(TERMINATED_STATUS)


_arrived: list[int] = []  # SIGTERMs received since the outermost sigterm_raises() block began


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` inside the block (main thread only; elsewhere unchanged).

    Every SIGTERM raises, so that one swallowed where Python cannot raise (a finaliser) never
    makes the stage unstoppable; the closing of the MLflow run is shielded by
    :func:`no_signal_raises` instead. Nests: an inner block restores the outer block's handler.
    """

    def handler(signum, frame):
        _arrived.append(signum)
        raise Terminated

    handler._protoviz_sigterm = True  # type: ignore[attr-defined]
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if not getattr(previous, "_protoviz_sigterm", False):  # the outermost block starts afresh
        _arrived.clear()
    try:
        signal.signal(signal.SIGTERM, handler)
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def no_signal_raises() -> Iterator[None]:
    """Inside the block, SIGTERM and SIGCHLD raise nothing (main thread only).

    For closing up after an interruption: PyTorch's DataLoader installs a SIGCHLD handler that
    raises when a worker dies, and workers stopped by the same signal die while the main
    process is still writing its MLflow run's end; an exception there would leave the run
    RUNNING.
    """
    try:
        previous = {
            number: signal.signal(number, signal.SIG_IGN if number == signal.SIGTERM else signal.SIG_DFL)
            for number in (signal.SIGTERM, signal.SIGCHLD)
        }
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` ends a stage that was stopped rather than one that failed: Ctrl-C, SIGTERM
    (this module's, or Ray's handler exiting with the signal's number), anything raised while
    handling one of those, or anything at all once SIGTERM has arrived."""
    if _arrived:
        return True
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (KeyboardInterrupt, Terminated)) or (
            isinstance(seen, SystemExit) and seen.code in (signal.SIGTERM, TERMINATED_STATUS)
        ):
            return True
        seen = seen.__context__
    return False


def exit_status(exc: BaseException) -> int:
    """The exit status of a stage stopped by ``exc`` (:func:`interrupted` is true): 143 after
    SIGTERM, 130 after Ctrl-C."""
    return TERMINATED_STATUS if _arrived or not _is_ctrl_c(exc) else INTERRUPTED_STATUS


def _is_ctrl_c(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, KeyboardInterrupt):
            return True
        exc = exc.__context__
    return False
