"""What a trainer shows of itself: ``trainer.summary()`` as text, ``_repr_html_`` in Jupyter.

Model, reward, steps done and the last step's headline stats; read off the trainer, nothing
computed here.
"""

from __future__ import annotations

import html

from rewardtune.types import STAT

HEADLINE_STATS = (STAT.reward_mean, STAT.kl, STAT.kl_coef, STAT.entropy, STAT.samples_per_s)


def summary_rows(trainer) -> list[tuple[str, str]]:
    """(label, value) pairs: model, trainable parameters, reward, steps, last stats."""
    cfg, params = trainer.config, trainer.parameters
    method = "LoRA" if trainer.policy.module.has_adapter else "full fine-tune"
    rows = [
        ("model", f"{cfg.model.name} ({method})"),
        ("trainable parameters", f"{params['trainable_lm'] + params['value_head']:,}"),
        ("reward", " + ".join(f"{r.type} × {r.weight}" for r in cfg.reward)),
        ("steps", f"{trainer.step_count} of {cfg.ppo.steps}"),
    ]
    last = getattr(trainer, "last_stats", None) or {}
    rows += [(name, f"{last[name]:.4g}") for name in HEADLINE_STATS if name in last]
    if not last:
        rows.append(("last step", "none yet"))
    return rows


def summary_text(trainer) -> str:
    rows = summary_rows(trainer)
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def summary_html(trainer) -> str:
    cells = "".join(
        f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
        f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
        for label, value in summary_rows(trainer)
    )
    return f"<table><caption>rewardtune PPOTrainer</caption>{cells}</table>"
