import os
import signal

import pytest

from protoviz_core.infra.interrupts import (
    INTERRUPTED_STATUS,
    TERMINATED_STATUS,
    Terminated,
    exit_status,
    interrupted,
    no_signal_raises,
    sigterm_raises,
)


def _raised_while_handling(first: BaseException, then: BaseException) -> BaseException:
    try:
        try:
            raise first
        except BaseException:
            raise then  # raised while handling: its __context__ is the point
    except BaseException as exc:
        return exc


def test_what_a_stopped_stage_raised_counts_as_stopped_and_a_failure_does_not():
    with sigterm_raises():  # a fresh block: no SIGTERM has arrived

        def worker_died():
            return RuntimeError("DataLoader worker (pid 1234) is killed by signal: Terminated")

        assert interrupted(_raised_while_handling(Terminated(), worker_died()))
        assert interrupted(_raised_while_handling(KeyboardInterrupt(), worker_died()))
        assert exit_status(_raised_while_handling(KeyboardInterrupt(), worker_died())) == INTERRUPTED_STATUS
        assert interrupted(SystemExit(signal.SIGTERM))  # Ray's handler exits with the signal's number
        assert not interrupted(worker_died()) and not interrupted(SystemExit(2))
        assert not interrupted(_raised_while_handling(ValueError(), worker_died()))


def test_every_sigterm_raises_and_afterwards_everything_counts_as_stopped():
    with sigterm_raises():
        for _ in range(2):  # a second one too: one swallowed must not make the stage unstoppable
            with pytest.raises(Terminated) as caught:
                os.kill(os.getpid(), signal.SIGTERM)
                signal.pause()  # not reached: the handler raises at once
            assert caught.value.code == TERMINATED_STATUS
        # After a SIGTERM, whatever ends the stage (a worker's death first) is a stop, not a failure.
        assert interrupted(ValueError()) and exit_status(ValueError()) == TERMINATED_STATUS
    with sigterm_raises():  # a new outermost block starts afresh
        assert not interrupted(ValueError())


def test_closing_up_is_not_cut_short_by_sigterm_or_a_child_exiting():
    def raising(signum, frame):
        raise RuntimeError("a handler raised")

    previous = signal.signal(signal.SIGCHLD, raising)
    try:
        with no_signal_raises():
            os.kill(os.getpid(), signal.SIGCHLD)
            os.kill(os.getpid(), signal.SIGTERM)
        assert signal.getsignal(signal.SIGCHLD) is raising  # restored
    finally:
        signal.signal(signal.SIGCHLD, previous)
