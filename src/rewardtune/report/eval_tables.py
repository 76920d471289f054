"""The before/after evaluation as tables: metrics with their CIs and verdicts, toxicity,
diversity and KL, the sections (other prompt sets and forms), and the side-by-side samples.
Read from the typed records of ``runs.eval_records``; used by the report, the comparison page and the model
card."""

from __future__ import annotations

import math

from rewardtune.report.blocks import Block, Cell, Heading, Para, Table
from rewardtune.report.formatting import is_number, num, pct, sort_key
from rewardtune.runs.eval_records import REWARD_TOTAL, EvalRow, EvalSummary


def metric_tone(metric: dict) -> str:
    """'better' / 'worse' by the sign of the difference and the metric's direction."""
    better, diff = metric.get("higher_is_better"), metric.get("diff")
    if better is None or not is_number(diff) or diff == 0:
        return ""
    tone = "better" if (diff > 0) == bool(better) else "worse"
    return f"{tone} ns" if metric.get("ci_includes_zero") else tone


def verdict(metric: dict) -> str:
    if metric.get("ci_includes_zero"):
        return "n.s."
    return {"better": "improved", "worse": "regressed"}.get(metric_tone(metric), "changed")


def difference_cells(metric: dict) -> list[Cell]:
    """A metric's difference, its 95% CI and the verdict: the last three columns of a
    before/after table (``diff``, ``ci``, ``ci_includes_zero``, ``higher_is_better``)."""
    low, high = (metric.get("ci") or [None, None])[:2]
    tone = metric_tone(metric)
    return [
        Cell(num(metric.get("diff"), signed=True), tone, sort=sort_key(metric.get("diff"))),
        Cell(f"[{num(low, True)}, {num(high, True)}]"),
        Cell(verdict(metric), f"verdict {tone}".strip()),
    ]


def _mean_std(side: dict | None) -> str:
    side = side or {}
    return f"{num(side.get('mean'))} ± {num(side.get('std'))}"


def _metric_row(m: dict) -> list[Cell]:
    return [
        Cell(str(m.get("label", m.get("name", "?"))), "metric", sub=str(m.get("name", ""))),
        Cell(_mean_std(m.get("before")), sort=sort_key((m.get("before") or {}).get("mean"))),
        Cell(_mean_std(m.get("after")), sort=sort_key((m.get("after") or {}).get("mean"))),
        *difference_cells(m),
    ]


def metrics_table(summary: EvalSummary, table_id: str = "metrics") -> Table:
    columns = [
        "metric",
        "before (mean ± std)",
        "after (mean ± std)",
        "difference",
        "95% CI",
        "verdict",
    ]
    rows = [_metric_row(m) for m in summary.metrics]
    return Table(columns, rows, table_id=table_id, numeric={1, 2, 3})


def eval_settings(summary: EvalSummary) -> str:
    """How the evaluation was run, in one paragraph."""
    return (
        f"Checkpoint {summary.checkpoint or '?'}, {summary.n_prompts or '?'} held-out "
        f"prompts × {summary.samples_per_prompt} samples, "
        f"seed {summary.seed}, "
        f"{summary.max_new_tokens} new tokens, "
        f"{summary.bootstrap} bootstrap resamples of the prompts for the 95% CIs of "
        "the paired difference (after − before). n.s.: the CI includes zero. "
        f"Before = the reference policy: {summary.reference or 'not recorded'}."
    )


def section_blocks(summary: EvalSummary) -> list[Block]:
    """Each section of eval.json (another prompt set or form) as its metrics table under a
    ``prompts · form`` heading; none for an eval.json written before sections existed."""
    sections = summary.sections
    if not sections:
        return []
    blocks: list[Block] = [
        Heading("Other prompt sets and forms", 3),
        Para(
            "The same before/after comparison, with the same seeds and settings, on the "
            "held-out prompts in another form (plain text or the chat template) and on prompt "
            "sets training never saw (eval.forms, eval.prompt_sets)."
        ),
    ]
    for section in sections:
        inner = section.summary
        blocks += [
            Heading(section.title, 4),
            Para(f"{inner.n_prompts or '?'} prompts × {inner.samples_per_prompt} samples."),
            metrics_table(inner, table_id=""),
        ]
    return blocks


def toxicity_blocks(tox: dict | None) -> list[Block]:
    if not tox:
        return [
            Para("No toxicity scorer was configured for evaluation (eval.toxicity).", note=True)
        ]
    before, after = tox.get("before") or {}, tox.get("after") or {}
    rows = [
        [Cell(name), Cell(_with_ci(before, key)), Cell(_with_ci(after, key)), Cell(pct(gain))]
        for name, key, gain in (
            ("mean", "mean", tox.get("improvement_mean")),
            ("std", "std", tox.get("improvement_std")),
            ("flagged rate (P > 0.5)", "flagged_rate", None),
            ("expected max toxicity (per prompt)", "expected_max", None),
            ("toxicity probability (a sample ≥ 0.5)", "probability", None),
        )
        if key in before
    ]
    columns = ["toxicity", "before", "after", "improvement (before − after) / before"]
    return [
        Heading(f"Toxicity ({tox.get('scorer', '?')})", 3),
        Para(
            f"Toxicity mean improved by {pct(tox.get('improvement_mean'))} and its std by "
            f"{pct(tox.get('improvement_std'))}, as (before − after) / before."
        ),
        Table(columns, rows, numeric={1, 2, 3}, compact=True),
    ]


def _with_ci(side: dict, key: str) -> str:
    """A value, with its 95% CI when the summary has one (``<key>_ci``)."""
    ci = side.get(f"{key}_ci")
    return f"{num(side.get(key))} [{num(ci[0])}, {num(ci[1])}]" if ci else num(side.get(key))


def diversity_kl_blocks(summary: EvalSummary) -> list[Block]:
    diversity = summary.diversity or {}
    before, after = diversity.get("before") or {}, diversity.get("after") or {}
    rows = [
        [
            Cell(k),
            Cell(num(before.get(k))),
            Cell(num(after.get(k))),
            Cell(num(sort_key(after.get(k)) - sort_key(before.get(k)), signed=True)),
        ]
        for k in sorted(set(before) | set(after))
    ]
    blocks: list[Block] = [Heading("Diversity and KL", 3)]
    if rows:
        columns = ["distinct-n", "before", "after", "difference"]
        blocks.append(Table(columns, rows, numeric={1, 2, 3}, compact=True))
    kl = summary.kl or {}
    low, high = (kl.get("ci") or [None, None])[:2]
    blocks.append(
        Para(
            f"KL(after ‖ before): {num(kl.get('mean'))} nats per response "
            f"(95% CI [{num(low)}, {num(high)}])."
        )
    )
    return blocks


# --- side by side --------------------------------------------------------------------


def _reward_change(row: EvalRow) -> float:
    before, after = row.scores_before.get(REWARD_TOTAL), row.scores_after.get(REWARD_TOTAL)
    return after - before if is_number(before) and is_number(after) else math.nan


def _last_if_nan(x: float) -> float:
    return math.inf if math.isnan(x) else x


def _sample_row(row: EvalRow) -> list[Cell]:
    before, after = row.scores_before.get(REWARD_TOTAL), row.scores_after.get(REWARD_TOTAL)
    change = _reward_change(row)
    tone = "better" if change > 0 else "worse" if change < 0 else ""
    return [
        Cell(str(row.prompt), "text"),
        Cell(str(row.before), "text"),
        Cell(str(row.after), "text"),
        Cell(num(before), sort=sort_key(before)),
        Cell(num(after), sort=sort_key(after)),
        Cell(num(change, True), tone, sort=change),
    ]


def samples_table(rows: list[EvalRow]) -> Table:
    """Side by side, largest reward gain first (rows without a reward change last)."""
    ranked = sorted(rows, key=lambda r: _last_if_nan(-_reward_change(r)))
    columns = ["query", "before", "after", "reward before", "reward after", "diff"]
    return Table(
        columns,
        [_sample_row(r) for r in ranked],
        table_id="samples",
        row_class="sample-row",
        numeric={3, 4, 5},
        sorted_desc=5,
        searchable=True,
    )
