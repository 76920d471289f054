"""Ctrl-C, SIGTERM (a scheduler ending a job) and SIGHUP (a closed terminal) during
training: the first finishes the step in flight; a second Ctrl-C or SIGHUP stops at once (a
second SIGTERM does not: launchers forward it). Outside the training loop (loading,
evaluation, report) the three stop the command where it is."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

log = logging.getLogger("rewardtune")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(Exception):
    """The user asked to stop (Ctrl-C / SIGTERM / SIGHUP); the step in flight was finished
    and checkpointed first. ``signum``: the signal that asked (None: another process of the
    run got it)."""

    def __init__(self, step: int, signum: int | None = None):
        super().__init__(step)
        self.step, self.signum = step, signum


class _handlers:
    """Install ``handler`` for every stop signal while the block runs (main thread only)."""

    def __init__(self):
        self.previous: dict = {}
        self.signum: int | None = None  # the first stop signal that came

    def __enter__(self):
        try:
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = {}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False

    def _handler(self, signum, frame):
        raise NotImplementedError


class stop_on_signals(_handlers):
    """SIGTERM and SIGHUP stop the block as Ctrl-C does, with a ``KeyboardInterrupt`` where it
    is (run files are written atomically, so what was written stays whole); ``signum`` says
    which signal came."""

    def _handler(self, signum, frame):
        self.signum = signum
        raise KeyboardInterrupt


class graceful_interrupt(_handlers):
    """While the block runs, the first stop signal calls ``request_stop`` (the loop checks its
    flag after each step); a second SIGINT or SIGHUP raises ``KeyboardInterrupt`` at once, a
    second SIGTERM changes nothing."""

    def __init__(self, request_stop: Callable[[], None]):
        super().__init__()
        self.request_stop = request_stop
        self.requested = False

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGTERM:
            # a scheduler sends SIGKILL itself after its grace period, and a launcher
            # forwards the SIGTERM its processes already got: neither means "stop at once"
            return
        if self.requested:
            previous = self.previous.get(signum)
            if callable(previous):  # the command's own handler (stop_on_signals) or Python's
                previous(signum, frame)
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum
        self.request_stop()
        log.warning(
            f"{signal.Signals(signum).name}: stopping after this step (press Ctrl-C again to stop at once)"
        )


def signal_name(signum: int | None) -> str:
    """' (SIGTERM)' for a message, or '' when the signal is not known here."""
    return f" ({signal.Signals(signum).name})" if signum is not None else ""
