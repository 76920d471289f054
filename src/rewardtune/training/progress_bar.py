"""The live progress bar of a training run: step, reward mean, KL, seconds per step.

rich draws it in a terminal and, in Jupyter, as a live widget (rich's Jupyter support), so
``trainer.train(progress=True)`` shows the same bar in a notebook as ``rewardtune train`` does
in a terminal.
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rewardtune.types import STAT


class StepProgress:
    """``with StepProgress(total, start) as update: ... update(step, stats)``; ``enabled=False``
    (ranks other than 0) shows nothing."""

    def __init__(
        self, total: int, start: int = 0, console: Console | None = None, enabled: bool = True
    ):
        self.total, self.start = total, start
        self.bar = Progress(
            TextColumn("[bold]PPO"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        self.last = time.perf_counter()

    def __enter__(self):
        self.bar.start()
        self.task = self.bar.add_task("ppo", total=self.total, completed=self.start, info="")
        return self.update

    def update(self, step: int, stats: dict) -> None:
        now = time.perf_counter()
        info = (
            f"reward {stats[STAT.reward_mean]:+.3f}  kl {stats[STAT.kl]:.3f}  "
            f"{now - self.last:.1f}s/step"
        )
        self.last = now
        self.bar.update(self.task, completed=step, info=info)
        self.bar.refresh()  # at once: in Jupyter, stopping the bar does not redraw it

    @property
    def completed(self) -> float:
        return self.bar.tasks[0].completed if self.bar.tasks else self.start

    def __exit__(self, *exc):
        self.bar.stop()
        return False
