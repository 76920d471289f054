"""The evaluation summary on the terminal: the metrics table, the toxicity and diversity
lines, the samples whose reward changed most, then each section's metrics table under its
heading (prompt set · form). Model text is printed as text (escaped)."""

from __future__ import annotations

import math

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from rewardtune.runs.eval_records import EvalRow, EvalSummary
from rewardtune.text import printable


def print_summary(summary: EvalSummary, console) -> None:
    """A rich table of the metrics, the top and bottom 5 samples by reward change, then the
    sections' tables."""
    console.print(_metrics_table(summary))
    if summary.toxicity:
        console.print(_toxicity_line(summary.toxicity))
    div = summary.diversity
    console.print(
        "distinct-1/2/3: before "
        + "/".join(f"{v:.3f}" for v in div["before"].values())
        + ", after "
        + "/".join(f"{v:.3f}" for v in div["after"].values())
        + f"; KL(after||before) {summary.kl['mean']:.3f} nats"
    )
    _print_extremes(summary.rows, console)
    for section in summary.sections:
        console.print(Text(section.title, style="bold"))
        console.print(_metrics_table(section.summary, "prompts"))


def _metrics_table(summary: EvalSummary, prompts: str = "held-out prompts") -> Table:
    table = Table(
        title=f"before vs after ({summary.n_prompts} {prompts} x "
        f"{summary.samples_per_prompt} samples, 95% bootstrap CI over prompts)"
    )
    for column in ("metric", "before", "after", "diff", "95% CI", ""):
        table.add_column(column, justify="right" if column not in ("metric", "") else "left")
    for m in summary.metrics:
        table.add_row(
            Text(printable(m["label"])),
            _fmt(m["before"]),
            _fmt(m["after"]),
            f"{m['diff']:+.4f}",
            escape(f"[{m['ci'][0]:+.4f}, {m['ci'][1]:+.4f}]"),
            "includes 0" if m["ci_includes_zero"] else "",
        )
    return table


def _toxicity_line(tox: dict) -> str:
    before, after = tox["before"], tox["after"]
    return (
        f"toxicity ({escape(tox['scorer'])}): mean {before['mean']:.4f} -> {after['mean']:.4f} "
        f"({_pct(tox['improvement_mean'])} improvement), std {before['std']:.4f} -> "
        f"{after['std']:.4f} ({_pct(tox['improvement_std'])}), flagged "
        f"{before['flagged_rate']:.1%} -> {after['flagged_rate']:.1%}; "
        f"expected max {before['expected_max']:.4f} -> "
        f"{after['expected_max']:.4f}, toxicity probability "
        f"{before['probability']:.1%} -> {after['probability']:.1%}"
    )


def _print_extremes(rows: list[EvalRow], console) -> None:
    if not rows:
        return
    ranked = sorted(rows, key=lambda r: r.reward_change, reverse=True)
    for title, chosen in (
        ("largest reward gains", ranked[:5]),
        ("largest reward losses", ranked[::-1][:5]),
    ):
        table = Table(title=title, show_lines=True)
        for column in ("prompt", "before", "after", "Δ reward"):
            table.add_column(column, overflow="fold")
        for r in chosen:
            texts = (r.prompt[-80:], r.before[:160], r.after[:160])
            table.add_row(*(Text(printable(t)) for t in texts), f"{r.reward_change:+.3f}")
        console.print(table)


def _fmt(side: dict) -> str:
    return f"{side['mean']:.4f} ± {side['std']:.4f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1%}"
