"""``rewardtune compare``: several runs side by side in ``compare.html`` and ``compare.md``.

Training curves overlaid, every run's before/after table side by side, and, where the runs
were evaluated on the same prompts with the same seed and lengths, the paired difference
between their "after" scores (each run against the first) with a bootstrap 95% interval.
The page is built from the report's blocks, so it is self-contained like ``report.html``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rewardtune.report.blocks import (
    Block,
    Cell,
    Heading,
    Para,
    Plot,
    Table,
    write_pages,
)
from rewardtune.report.eval_tables import difference_cells, metric_tone
from rewardtune.report.figures import overlay_figure, series
from rewardtune.report.formatting import duration, num, sort_key
from rewardtune.report.run_data import RunData, load_run, reward_text
from rewardtune.stats import cluster_bootstrap_ci
from rewardtune.types import STAT, RewardtuneError

COMPARE_HTML, COMPARE_MD = "compare.html", "compare.md"
CURVES = [  # (panel title, stat)
    ("Reward (mean)", STAT.reward_mean),
    ("KL to reference", STAT.kl),
    ("Entropy", STAT.entropy),
    ("Throughput (samples/s)", STAT.samples_per_s),
]
# what must match for the "after" columns of two runs to pair prompt by prompt
PAIRING = ("checkpoint", "n_prompts", "seed", "max_new_tokens")


@dataclass
class NamedRun:
    name: str
    data: RunData


def write_compare(run_dirs: list[Path], out_dir: Path) -> tuple[Path, Path]:
    """Write ``compare.html`` and ``compare.md`` into ``out_dir``; returns their paths.

    Refuses (``RewardtuneError``) runs that were all evaluated but not in the same way.
    """
    if len(run_dirs) < 2:
        raise RewardtuneError("compare needs at least two run directories")
    runs = [
        NamedRun(_name(path, i, run_dirs), load_run(Path(path))) for i, path in enumerate(run_dirs)
    ]
    paired = _pairable(runs)
    blocks = [*runs_section(runs), *curves_section(runs), *evaluation_section(runs)]
    blocks += paired_section(runs) if paired else [Heading("Paired difference"), _unpaired_note()]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = "rewardtune compare: " + " vs ".join(r.name for r in runs)
    subtitle = f"{len(runs)} runs; the first is the baseline of the paired differences"
    return write_pages(out_dir / COMPARE_HTML, out_dir / COMPARE_MD, title, subtitle, blocks)


def _name(path: Path, index: int, paths: list[Path]) -> str:
    name = Path(path).resolve().name
    same = [p for p in paths if Path(p).resolve().name == name]
    return f"{name} ({index + 1})" if len(same) > 1 else name


def _pairable(runs: list[NamedRun]) -> bool:
    """True when every run was evaluated the same way; False when some run was not
    evaluated; a ``RewardtuneError`` naming the difference otherwise."""
    if any(not r.data.eval_summary or not r.data.eval_rows for r in runs):
        return False
    first = runs[0]
    for other in runs[1:]:
        for key in PAIRING:
            a, b = getattr(first.data.eval_summary, key), getattr(other.data.eval_summary, key)
            if a != b:
                raise RewardtuneError(_refusal(first.name, other.name, f"{key} {a} vs {b}"))
        if _prompts(first) != _prompts(other):
            raise RewardtuneError(_refusal(first.name, other.name, "different held-out prompts"))
    return True


def _refusal(a: str, b: str, why: str) -> str:
    return (
        f"runs {a} and {b} were evaluated differently ({why}); the paired difference needs the "
        "same prompts, seed and lengths: re-run `rewardtune evaluate` on both with the same "
        "--prompts (and eval settings)"
    )


def _prompts(run: NamedRun) -> list[str]:
    return [row.prompt for row in run.data.eval_rows]


def _unpaired_note() -> Para:
    text = "Not every run has been evaluated (eval.json); run `rewardtune evaluate` on each."
    return Para(text, note=True)


# --- sections ------------------------------------------------------------------------


def runs_section(runs: list[NamedRun]) -> list[Block]:
    columns = ["run", "recipe", "model", "reward", "steps", "learning rate", "KL coef", "wall time"]
    rows = []
    for run in runs:
        cfg, info = run.data.config, run.data.run_info or {}
        ppo = cfg.get("ppo") or {}
        rows.append(
            [
                Cell(run.name),
                Cell(str(cfg.get("recipe", "?"))),
                Cell(str((cfg.get("model") or {}).get("name", "?"))),
                Cell(reward_text(cfg)),
                Cell(f"{run.data.steps_done} of {ppo.get('steps', '?')}"),
                Cell(str(ppo.get("learning_rate", "?"))),
                Cell(str(ppo.get("init_kl_coef", "?"))),
                Cell(duration(info.get("wall_time_s"))),
            ]
        )
    return [Heading("Runs"), Table(columns, rows, table_id="runs")]


def curves_section(runs: list[NamedRun]) -> list[Block]:
    png = overlay_figure([(r.name, r.data.metrics) for r in runs], CURVES)
    if png is None:
        return [Heading("Training curves"), Para("No run has training metrics.", note=True)]
    alt = "Reward, KL, entropy and throughput per step, one line per run"
    return [Heading("Training curves"), Plot(png, alt)]


def evaluation_section(runs: list[NamedRun]) -> list[Block]:
    """Every run's before/after/difference per metric, side by side."""
    evaluated = [r for r in runs if r.data.eval_summary]
    if not evaluated:
        return [Heading("Evaluation"), _unpaired_note()]
    names = list(dict.fromkeys(m["name"] for r in evaluated for m in _metrics(r)))
    columns = ["metric"]
    for run in evaluated:
        columns += [f"{run.name}: before", f"{run.name}: after", f"{run.name}: after − before"]
    rows = [[Cell(name), *(c for r in evaluated for c in _metric_cells(r, name))] for name in names]
    numeric = set(range(1, len(columns)))
    return [Heading("Evaluation"), Table(columns, rows, table_id="evaluation", numeric=numeric)]


def _metrics(run: NamedRun) -> list[dict]:
    return run.data.eval_summary.metrics if run.data.eval_summary else []


def _metric_cells(run: NamedRun, name: str) -> list[Cell]:
    metric = next((m for m in _metrics(run) if m.get("name") == name), None)
    if metric is None:
        return [Cell("n/a"), Cell("n/a"), Cell("n/a")]
    before, after = metric.get("before") or {}, metric.get("after") or {}
    low, high = (metric.get("ci") or [None, None])[:2]
    diff = f"{num(metric.get('diff'), True)} [{num(low, True)}, {num(high, True)}]"
    return [
        Cell(num(before.get("mean")), sort=sort_key(before.get("mean"))),
        Cell(num(after.get("mean")), sort=sort_key(after.get("mean"))),
        Cell(diff, metric_tone(metric), sort=sort_key(metric.get("diff"))),
    ]


def paired_section(runs: list[NamedRun]) -> list[Block]:
    base = runs[0]
    summary = base.data.eval_summary
    text = (
        f"Each run's after scores minus {base.name}'s, prompt by prompt on the same "
        f"{summary.n_prompts} held-out prompts (seed {summary.seed}); 95% CI from "
        f"{summary.bootstrap} bootstrap resamples. n.s.: the CI includes zero."
    )
    blocks: list[Block] = [Heading("Paired difference"), Para(text)]
    for other in runs[1:]:
        blocks += [Heading(f"{other.name} − {base.name}", 3), paired_table(base, other)]
    return blocks


def paired_table(base: NamedRun, other: NamedRun) -> Table:
    n, seed = base.data.eval_summary.bootstrap, base.data.eval_summary.seed
    better = {m["name"]: m.get("higher_is_better") for m in _metrics(base)}
    rows = []
    for name in _common_scores(base, other):
        a, b = _after(base, name), _after(other, name)
        low, high = cluster_bootstrap_ci(b - a, _prompt_ids(base), n, seed)
        metric = {
            "higher_is_better": better.get(name),
            "diff": float(np.mean(b - a)),
            "ci": [low, high],
            "ci_includes_zero": bool(low <= 0.0 <= high),
        }
        rows.append(
            [
                Cell(name),
                Cell(num(float(a.mean()))),
                Cell(num(float(b.mean()))),
                *difference_cells(metric),
            ]
        )
    columns = [
        "score",
        f"{base.name} after",
        f"{other.name} after",
        "difference",
        "95% CI",
        "verdict",
    ]
    return Table(columns, rows, numeric={1, 2, 3}, compact=True)


def _common_scores(base: NamedRun, other: NamedRun) -> list[str]:
    first = base.data.eval_rows[0].scores_after
    return [k for k in first if k in other.data.eval_rows[0].scores_after]


def _after(run: NamedRun, name: str) -> np.ndarray:
    return series([row.scores_after for row in run.data.eval_rows], name)


def _prompt_ids(run: NamedRun) -> list:
    """The prompt of each eval row: samples of one prompt are resampled together."""
    return [row.prompt_id for row in run.data.eval_rows]
