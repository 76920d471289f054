"""Ctrl-C / SIGTERM during training: the first finishes the step in flight, the second stops
at once."""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

log = logging.getLogger("rewardtune")


class Interrupted(Exception):
    """The user asked to stop (Ctrl-C / SIGTERM); the step in flight was finished first."""


class graceful_interrupt:
    """While the block runs, the first SIGINT/SIGTERM calls ``request_stop`` (the loop checks
    its flag after each step); a second one raises ``KeyboardInterrupt`` at once."""

    def __init__(self, request_stop: Callable[[], None]):
        self.request_stop = request_stop
        self.requested = False
        self.previous: dict = {}

    def _handler(self, signum, frame):
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
