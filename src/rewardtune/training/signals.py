"""Ctrl-C / SIGTERM during training: the first finishes the step in flight, a second Ctrl-C
stops at once."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

log = logging.getLogger("rewardtune")


class Interrupted(Exception):
    """The user asked to stop (Ctrl-C / SIGTERM); the step in flight was finished first."""


class graceful_interrupt:
    """While the block runs, the first SIGINT/SIGTERM calls ``request_stop`` (the loop checks
    its flag after each step); a second SIGINT raises ``KeyboardInterrupt`` at once, a second
    SIGTERM changes nothing."""

    def __init__(self, request_stop: Callable[[], None]):
        self.request_stop = request_stop
        self.requested = False
        self.previous: dict = {}

    def _handler(self, signum, frame):
        if self.requested and signum == signal.SIGTERM:
            # a scheduler sends SIGKILL itself after its grace period, and a launcher
            # forwards the SIGTERM its processes already got: neither means "stop at once"
            return
        if self.requested:
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.requested = True
        self.request_stop()
        log.warning("stopping after this step (press Ctrl-C again to stop at once)")

    def __enter__(self):
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = {}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False
