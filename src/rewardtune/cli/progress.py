"""What `rewardtune train` shows while it runs: the header and the live progress bar."""

from __future__ import annotations

import time
from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rewardtune.cli.base import console, say


def print_header(trainer, path: Path) -> None:
    p, cfg = trainer.parameters, trainer.config
    lm_kind = "LoRA" if trainer.policy.module.has_adapter else "full"
    say(
        trainer.accelerator,
        f"[bold]rewardtune[/] {escape(cfg.recipe)}: model "
        f"{escape(cfg.model.name)} "
        f"({'seq2seq' if trainer.policy.seq2seq else 'causal'}), run dir {escape(str(path))}\n"
        f"trainable {lm_kind} parameters: {p['trainable_lm']:,} | value head: {p['value_head']:,} | "
        f"all: {p['total']:,} ({100 * (p['trainable_lm'] + p['value_head']) / p['total']:.2f}% trainable)\n"
        f"prompts: {len(trainer.train_prompts)} train, {len(trainer.eval_prompts)} eval; "
        f"{cfg.ppo.steps} steps of {cfg.ppo.batch_size}; advantage "
        f"{cfg.ppo.advantage}, {cfg.ppo.samples_per_prompt} per prompt",
    )


class progress:
    """A live bar: step, reward mean, KL, seconds per step (rank 0 only)."""

    def __init__(self, accelerator, total: int, start: int):
        self.enabled = accelerator.is_main_process
        self.total, self.start = total, start
        self.bar = Progress(
            TextColumn("[bold]PPO"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not self.enabled,
        )
        self.last = time.perf_counter()

    def __enter__(self):
        self.bar.start()
        self.task = self.bar.add_task("ppo", total=self.total, completed=self.start, info="")
        return self.update

    def update(self, step: int, stats: dict) -> None:
        now = time.perf_counter()
        info = (
            f"reward {stats['env/reward_mean']:+.3f}  kl {stats['objective/kl']:.3f}  "
            f"{now - self.last:.1f}s/step"
        )
        self.last = now
        self.bar.update(self.task, completed=step, info=info)

    def __exit__(self, *exc):
        self.bar.stop()
        return False
