"""Seconds spent in each stage of a step, summed until the step reports them."""

from __future__ import annotations

import time


class StepTimer:
    """``seconds`` by stage (``rollout``, ``reward``); ``generate`` and ``train`` add to it,
    ``step`` reads and clears it. A classic loop may set ``seconds["reward"]`` itself."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def since(self, stage: str, start: float) -> float:
        """Add the time since ``start`` (``time.perf_counter()``) to ``stage``; returns now."""
        now = time.perf_counter()
        self.add(stage, now - start)
        return now

    def get(self, stage: str) -> float:
        return self.seconds.get(stage, 0.0)

    def clear(self) -> None:
        self.seconds.clear()
