"""What `rewardtune train` shows while it runs: the header and the live progress bar
(``training.progress``, on the CLI's console)."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from rewardtune.cli.base import console, say
from rewardtune.training.progress import StepProgress


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


def progress(accelerator, total: int, start: int) -> StepProgress:
    """The training bar on the CLI's console, drawn by rank 0 only."""
    return StepProgress(total, start, console, enabled=accelerator.is_main_process)
