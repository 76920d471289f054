"""A run's report: one self-contained ``report.html`` and the same content as ``report.md``.

The report is built once as a list of blocks (headings, paragraphs, facts, tables,
figures); each block renders itself to HTML and to Markdown, so the two files always say
the same thing. The HTML has no external reference at all: CSS and JS are inline and plots
are base64 PNGs, so the file can be mailed or opened offline.

Every optional input (metrics, samples, run info, evaluation) may be missing; its section
then says so instead of failing.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
import yaml
from matplotlib.figure import Figure

from rewardtune.runs.rundir import CONFIG, METRICS, SAMPLES, read_jsonl, write_atomic
from rewardtune.types import RewardtuneError

matplotlib.use("Agg")  # figures are only ever written to PNG bytes

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
TRAINING_SAMPLES_SHOWN = 8
BEFORE_COLOR, AFTER_COLOR = "#8a94a6", "#2563eb"
SIDES = ("before", "after")


# --- reading the run directory -------------------------------------------------------


@dataclass
class RunData:
    """Everything the report reads; optional files come back empty or None."""

    config: dict
    metrics: list[dict]
    samples: list[dict]
    run_info: dict | None
    eval_summary: dict | None
    eval_rows: list[dict]


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RewardtuneError(f"{path} is not valid JSON ({err}); regenerate or remove it") from err


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise RewardtuneError(f"{path.parent} is not a rewardtune run directory (no {CONFIG})")
    return yaml.safe_load(path.read_text()) or {}


def load_run(run_dir: Path) -> RunData:
    return RunData(
        config=_read_config(run_dir / CONFIG),
        metrics=read_jsonl(run_dir / METRICS),
        samples=read_jsonl(run_dir / SAMPLES),
        run_info=_read_json(run_dir / "run_info.json"),
        eval_summary=_read_json(run_dir / "eval.json"),
        eval_rows=read_jsonl(run_dir / "eval.jsonl"),
    )


# --- text helpers --------------------------------------------------------------------


def _esc(text: object) -> str:
    """HTML-escape user text; '://' is written as an entity so no URL appears in the file."""
    return html.escape(str(text)).replace("://", ":&#47;&#47;")


def _md(text: object) -> str:
    """Text safe inside a Markdown table cell: no raw HTML tags, no pipes, one line."""
    escaped = str(text).replace("<", "&lt;").replace("|", "\\|")
    return " ".join(escaped.split())


_MD_SPECIAL = re.compile(r"([\\`*_\[\]()!<>|#~&{}])")


def _md_text(text: object) -> str:
    """User or model text as inert Markdown: every character that could start a link, an
    image, HTML, emphasis or code is backslash-escaped, and URLs are broken as in the HTML
    (GitHub links a bare ``https://`` or ``www.``)."""
    escaped = _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))
    escaped = escaped.replace("://", ":&#47;&#47;")
    return re.sub(r"(?i)\bwww\.", lambda m: m.group(0)[:3] + "&#46;", escaped)


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _num(x: object, signed: bool = False) -> str:
    if not _is_number(x):
        return "n/a"
    sign = "+" if signed else ""
    return f"{x:{sign},.0f}" if abs(x) >= 1e4 else f"{x:{sign}.4g}"


def _sort_key(x: object) -> float:
    return float(x) if _is_number(x) else math.nan


def _pct(x: object) -> str:
    return f"{x:.1%}" if _is_number(x) else "n/a"


def _share(part: float, whole: float) -> str:
    """A small percentage with 3 significant digits: 1.35%, 0.000423%."""
    return f"{100 * part / whole:.3g}%"


def _count(n: object) -> str:
    if not _is_number(n):
        return "n/a"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(int(n))


def _duration(seconds: object) -> str:
    if not _is_number(seconds):
        return "unknown (no run_info.json)"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


# --- blocks: each renders itself to HTML and to Markdown -----------------------------


@dataclass
class Heading:
    text: str
    level: int = 2

    def html(self) -> str:
        anchor = f' id="{_slug(self.text)}"' if self.level == 2 else ""
        return f"<h{self.level}{anchor}>{_esc(self.text)}</h{self.level}>"

    def markdown(self) -> str:
        return f"{'#' * self.level} {_md(self.text)}"


@dataclass
class Para:
    text: str
    note: bool = False  # a callout: something is missing

    def html(self) -> str:
        cls = ' class="note"' if self.note else ""
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(self.text))
        return f"<p{cls}>{text}</p>"

    def markdown(self) -> str:
        return f"> {_md(self.text)}" if self.note else _md(self.text)


@dataclass
class Facts:
    pairs: list[tuple[str, str]]

    def html(self) -> str:
        items = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in self.pairs)
        return f'<dl class="facts">{items}</dl>'

    def markdown(self) -> str:
        return "\n".join(f"- **{_md(k)}:** {_md(v)}" for k, v in self.pairs)


@dataclass
class Cell:
    text: str
    cls: str = ""
    sort: float | None = None  # numeric sort key for the JS; NaN/None sort last
    sub: str = ""  # a secondary line (e.g. the metric's key)

    def html(self, numeric: bool = False) -> str:
        cls = " ".join(c for c in (self.cls, "num" if numeric else "") if c)
        attrs = f' class="{cls}"' if cls else ""
        if self.sort is not None:
            value = repr(float(self.sort)) if math.isfinite(self.sort) else ""
            attrs += f' data-value="{value}"'
        sub = f"<small>{_esc(self.sub)}</small>" if self.sub else ""
        return f"<td{attrs}>{_esc(self.text)}{sub}</td>"

    def markdown(self) -> str:
        if self.cls == "text":  # a prompt or a response: text nobody here wrote
            return _md_text(self.text)
        return _md(f"{self.text} (`{self.sub}`)" if self.sub else self.text)


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    table_id: str = ""
    row_class: str = ""
    numeric: set[int] = field(default_factory=set)  # column indices that sort numerically
    sorted_desc: int | None = None  # the column the rows arrive sorted by, largest first
    searchable: bool = False
    compact: bool = False  # as wide as its content, not the page

    def html(self) -> str:
        return self._search_box() + f'<div class="scroll">{self._table()}</div>'

    def _table(self) -> str:
        table_id = f' id="{self.table_id}"' if self.table_id else ""
        row_cls = f' class="{self.row_class}"' if self.row_class else ""
        body = "".join(f"<tr{row_cls}>{self._cells(row)}</tr>" for row in self.rows)
        head = f"<thead><tr>{self._header()}</tr></thead>"
        cls = "sortable compact" if self.compact else "sortable"
        return f'<table{table_id} class="{cls}">{head}<tbody>{body}</tbody></table>'

    def _cells(self, row: list[Cell]) -> str:
        return "".join(cell.html(numeric=i in self.numeric) for i, cell in enumerate(row))

    def _header(self) -> str:
        cells = []
        for i, name in enumerate(self.columns):
            cls = ' class="num"' if i in self.numeric else ""
            sort = ' aria-sort="descending"' if i == self.sorted_desc else ""
            cells.append(f'<th{cls}{sort} title="click to sort">{_esc(name)}</th>')
        return "".join(cells)

    def _search_box(self) -> str:
        if not self.searchable:
            return ""
        n = len(self.rows)
        return (
            f'<div class="search"><input type="search" class="filter" data-table="{self.table_id}"'
            f' placeholder="Filter rows by any text" aria-label="Filter rows">'
            f'<span id="{self.table_id}-count">{n} of {n} rows</span></div>'
        )

    def markdown(self) -> str:
        lines = [
            "| " + " | ".join(_md(c) for c in self.columns) + " |",
            "|"
            + "|".join("---:" if i in self.numeric else "---" for i in range(len(self.columns)))
            + "|",
        ]
        lines += ["| " + " | ".join(c.markdown() for c in row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass
class Plot:
    png: bytes
    alt: str

    def html(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(self.alt)}">'
            f"<figcaption>{_esc(self.alt)}</figcaption></figure>"
        )

    def markdown(self) -> str:
        return f"*Plot omitted in Markdown ({_md(self.alt)}); see report.html.*"


Block = Heading | Para | Facts | Table | Plot


# --- plots ---------------------------------------------------------------------------


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" metadata: matplotlib would put its web address inside the PNG.
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _series(rows: list[dict], key: str) -> np.ndarray:
    values = [row.get(key) for row in rows]
    return np.array([v if _is_number(v) else np.nan for v in values], dtype=np.float64)


def _has(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).any())


_LINE_PANELS = [  # (title, (label, key), second series on its own y axis or None)
    (
        "KL to reference and KL coefficient",
        ("KL", "objective/kl"),
        ("KL coef", "objective/kl_coef"),
    ),
    ("Losses", ("policy loss", "ppo/loss/policy"), ("value loss", "ppo/loss/value")),
    ("Clip fraction", ("clip fraction", "ppo/policy/clipfrac"), None),
    (
        "Throughput",
        ("samples/s", "throughput/samples_per_s"),
        ("tokens/s", "throughput/tokens_per_s"),
    ),
]


def _plot_lines(ax, steps: np.ndarray, metrics: list[dict], left, right) -> None:
    """One or two series on one panel; the second on its own y axis (their scales differ)."""
    handles = ax.plot(steps, _series(metrics, left[1]), color=AFTER_COLOR, label=left[0])
    top = ax
    if right is not None and _has(_series(metrics, right[1])):
        top = ax.twinx()  # drawn over ax: the legend goes on it so no line crosses it
        values = _series(metrics, right[1])
        handles += top.plot(steps, values, color="#ea580c", linestyle="--", label=right[0])
        top.tick_params(labelsize=8)
    top.legend(handles=handles, fontsize=8, loc="best", framealpha=0.9)


def _plot_reward(ax, steps: np.ndarray, metrics: list[dict]) -> None:
    mean, std = _series(metrics, "env/reward_mean"), _series(metrics, "env/reward_std")
    ax.plot(steps, mean, color=AFTER_COLOR, label="reward mean")
    if _has(std):
        ax.fill_between(steps, mean - std, mean + std, color=AFTER_COLOR, alpha=0.2, label="± std")
    ax.legend(fontsize=8, loc="best")


def _plot_step_time(ax, steps: np.ndarray, metrics: list[dict]) -> None:
    keys = ("time/rollout", "time/reward", "time/update")
    values = [np.nan_to_num(_series(metrics, k)) for k in keys]
    labels = [k.split("/")[1] for k in keys]
    ax.stackplot(steps, *values, labels=labels, colors=["#93c5fd", "#fcd34d", "#86efac"])
    ax.legend(fontsize=8, loc="upper left")


def _training_panels(metrics: list[dict]) -> list[tuple[str, Callable]]:
    """(title, draw(ax, steps, metrics)) for each panel whose data exists."""
    panels = [("Reward (mean ± std)", "env/reward_mean", _plot_reward)]
    for title, left, right in _LINE_PANELS:
        panels.append((title, left[1], functools.partial(_plot_lines, left=left, right=right)))
    panels.append(("Seconds per step", "time/update", _plot_step_time))
    return [(title, draw) for title, key, draw in panels if _has(_series(metrics, key))]


def training_figure(metrics: list[dict]) -> bytes | None:
    """The training curves as one PNG, or None when no panel has data."""
    panels = _training_panels(metrics)
    if not panels:
        return None
    steps = _series(metrics, "step")
    steps = steps if _has(steps) else np.arange(len(metrics), dtype=np.float64)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.1 * nrows), layout="constrained")
    for i, (title, draw) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        draw(ax, steps, metrics)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    return _png(fig)


def _eval_scores(rows: list[dict], side: str, key: str) -> np.ndarray:
    values = _series([row.get(f"scores_{side}", {}) for row in rows], key)
    return values[np.isfinite(values)]


def histogram_figure(rows: list[dict], keys: tuple[str, ...] = ("reward/total", "toxicity")):
    """Before/after histograms of each score in ``keys`` found in eval.jsonl, or None."""
    present = [k for k in keys if all(len(_eval_scores(rows, side, k)) for side in SIDES)]
    if not present:
        return None
    fig = Figure(figsize=(5.2 * len(present), 3.2), layout="constrained")
    for i, key in enumerate(present):
        ax = fig.add_subplot(1, len(present), i + 1)
        before, after = _eval_scores(rows, "before", key), _eval_scores(rows, "after", key)
        bins = np.histogram_bin_edges(np.concatenate([before, after]), bins=20)
        sides = (("before", before, BEFORE_COLOR), ("after", after, AFTER_COLOR))
        for name, values, color in sides:
            label = f"{name} (mean {_num(values.mean())})"
            ax.hist(values, bins=bins, alpha=0.55, color=color, label=label)
            ax.axvline(values.mean(), color=color, linestyle="--", linewidth=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_ylabel("prompts", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8)
    return _png(fig)


# --- sections ------------------------------------------------------------------------


def _reward_term(term: dict) -> str:
    keys = ("model", "label", "output", "function", "url")
    details = [f"{k}={term[k]}" for k in keys if k in term]
    text = f"{term.get('type', '?')} × {term.get('weight', 1.0)}"
    return f"{text} ({', '.join(details)})" if details else text


def _lora_text(lora: object) -> str:
    if not isinstance(lora, dict):
        return "none (full fine-tune)"
    return ", ".join(f"{k}={v}" for k, v in lora.items())


def _parameter_facts(run_info: dict | None, lora: object) -> list[tuple[str, str]]:
    params = (run_info or {}).get("parameters")
    if not params:
        return [("Trainable parameters", "unknown (no run_info.json)")]
    total = params.get("total")

    def share(n: object) -> str:
        if not (_is_number(n) and _is_number(total) and total):
            return _count(n)
        return f"{_count(n)} ({_share(n, total)} of {_count(total)} total)"

    lm_name = "LoRA adapter" if isinstance(lora, dict) else "language model"
    trainable = sum(v for k, v in params.items() if k != "total" and _is_number(v))
    return [
        (f"Trainable: {lm_name}", share(params.get("trainable_lm"))),
        ("Trainable: value head", share(params.get("value_head"))),
        ("Trainable: all", share(trainable)),
    ]


def _ppo_text(ppo: dict) -> str:
    return (
        f"batch {ppo.get('batch_size', '?')}, learning rate {ppo.get('learning_rate', '?')}, "
        f"initial KL coef {ppo.get('init_kl_coef', '?')}"
    )


ESTIMATOR_PAPERS = {
    "gae": "GAE with a value head (Schulman et al. 2016)",
    "rloo": "RLOO, leave-one-out baseline (Ahmadian et al. 2024)",
    "grpo": "GRPO, group-normalised (Shao et al. 2024)",
    "dr_grpo": "Dr. GRPO, group mean only (Liu et al. 2025)",
    "reinforce_pp": "REINFORCE++, batch-whitened returns (Hu 2025)",
}


def _advantage_text(ppo: dict) -> str:
    name = ppo.get("advantage", "gae")
    if name == "grpo" and ppo.get("grpo_scale") is False:
        name = "dr_grpo"
    k = ppo.get("samples_per_prompt", 1)
    kl = "in the loss (k3)" if ppo.get("kl_in") == "loss" else "in the reward"
    return f"{ESTIMATOR_PAPERS.get(name, name)}; {k} sample(s) per prompt; KL {kl}"


def summary_section(run: RunData) -> list[Block]:
    cfg, info = run.config, run.run_info or {}
    model, ppo = cfg.get("model") or {}, cfg.get("ppo") or {}
    steps_done = info.get("steps_done", len(run.metrics))
    facts = [
        ("Recipe", str(cfg.get("recipe", "unknown"))),
        ("Model", str(info.get("model") or model.get("name", "unknown"))),
        ("LoRA", _lora_text(model.get("lora"))),
        ("Reward", " + ".join(_reward_term(t) for t in cfg.get("reward") or []) or "none"),
        ("Steps", f"{steps_done} done of {ppo.get('steps', '?')} configured"),
        ("PPO", _ppo_text(ppo)),
        ("Advantage", _advantage_text(ppo)),
        ("Wall time", _duration(info.get("wall_time_s"))),
        *_parameter_facts(run.run_info, model.get("lora")),
    ]
    return [Heading("Run summary"), Facts(facts)]


def training_section(run: RunData) -> list[Block]:
    blocks: list[Block] = [Heading("Training curves")]
    png = training_figure(run.metrics) if run.metrics else None
    if png is None:
        missing = "No training metrics yet (metrics.jsonl is missing or empty)."
        return [*blocks, Para(missing, note=True)]
    return [*blocks, Plot(png, f"Training curves over {len(run.metrics)} PPO steps")]


def training_samples_section(run: RunData) -> list[Block]:
    if not run.samples:
        return []
    shown = run.samples[-TRAINING_SAMPLES_SHOWN:]
    rows = [
        [
            Cell(str(s.get("step", "")), sort=_sort_key(s.get("step"))),
            Cell(str(s.get("prompt", "")), "text"),
            Cell(str(s.get("response", "")), "text"),
            Cell(_num(s.get("reward")), sort=_sort_key(s.get("reward"))),
        ]
        for s in shown
    ]
    table = Table(["step", "prompt", "response", "reward"], rows, numeric={0, 3})
    return [Heading("Last training samples"), Para(f"The last {len(shown)} logged samples."), table]


def _tone(metric: dict) -> str:
    """'better' / 'worse' by the sign of the difference and the metric's direction."""
    better, diff = metric.get("higher_is_better"), metric.get("diff")
    if better is None or not _is_number(diff) or diff == 0:
        return ""
    tone = "better" if (diff > 0) == bool(better) else "worse"
    return f"{tone} ns" if metric.get("ci_includes_zero") else tone


def _verdict(metric: dict) -> str:
    if metric.get("ci_includes_zero"):
        return "n.s."
    return {"better": "improved", "worse": "regressed"}.get(_tone(metric), "changed")


def _mean_std(side: dict | None) -> str:
    side = side or {}
    return f"{_num(side.get('mean'))} ± {_num(side.get('std'))}"


def _metric_row(m: dict) -> list[Cell]:
    low, high = (m.get("ci") or [None, None])[:2]
    tone = _tone(m)
    return [
        Cell(str(m.get("label", m.get("name", "?"))), "metric", sub=str(m.get("name", ""))),
        Cell(_mean_std(m.get("before")), sort=_sort_key((m.get("before") or {}).get("mean"))),
        Cell(_mean_std(m.get("after")), sort=_sort_key((m.get("after") or {}).get("mean"))),
        Cell(_num(m.get("diff"), signed=True), tone, sort=_sort_key(m.get("diff"))),
        Cell(f"[{_num(low, True)}, {_num(high, True)}]"),
        Cell(_verdict(m), f"verdict {tone}".strip()),
    ]


def metrics_table(summary: dict) -> Table:
    columns = [
        "metric",
        "before (mean ± std)",
        "after (mean ± std)",
        "difference",
        "95% CI",
        "verdict",
    ]
    rows = [_metric_row(m) for m in summary.get("metrics", [])]
    return Table(columns, rows, table_id="metrics", numeric={1, 2, 3})


def toxicity_blocks(tox: dict | None) -> list[Block]:
    if not tox:
        return [
            Para("No toxicity scorer was configured for evaluation (eval.toxicity).", note=True)
        ]
    before, after = tox.get("before") or {}, tox.get("after") or {}
    rows = [
        [Cell(name), Cell(_with_ci(before, key)), Cell(_with_ci(after, key)), Cell(_pct(gain))]
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
            f"Toxicity mean improved by {_pct(tox.get('improvement_mean'))} and its std by "
            f"{_pct(tox.get('improvement_std'))}, as (before − after) / before."
        ),
        Table(columns, rows, numeric={1, 2, 3}, compact=True),
    ]


def _with_ci(side: dict, key: str) -> str:
    """A value, with its 95% CI when the summary has one (``<key>_ci``)."""
    ci = side.get(f"{key}_ci")
    return f"{_num(side.get(key))} [{_num(ci[0])}, {_num(ci[1])}]" if ci else _num(side.get(key))


def diversity_kl_blocks(summary: dict) -> list[Block]:
    diversity = summary.get("diversity") or {}
    before, after = diversity.get("before") or {}, diversity.get("after") or {}
    rows = [
        [
            Cell(k),
            Cell(_num(before.get(k))),
            Cell(_num(after.get(k))),
            Cell(_num(_sort_key(after.get(k)) - _sort_key(before.get(k)), signed=True)),
        ]
        for k in sorted(set(before) | set(after))
    ]
    blocks: list[Block] = [Heading("Diversity and KL", 3)]
    if rows:
        columns = ["distinct-n", "before", "after", "difference"]
        blocks.append(Table(columns, rows, numeric={1, 2, 3}, compact=True))
    kl = summary.get("kl") or {}
    low, high = (kl.get("ci") or [None, None])[:2]
    blocks.append(
        Para(
            f"KL(after ‖ before): {_num(kl.get('mean'))} nats per response "
            f"(95% CI [{_num(low)}, {_num(high)}])."
        )
    )
    return blocks


def _eval_settings(summary: dict) -> str:
    return (
        f"Checkpoint {summary.get('checkpoint', '?')}, {summary.get('n_prompts', '?')} held-out "
        f"prompts × {summary.get('samples_per_prompt', 1)} samples, "
        f"seed {summary.get('seed', '?')}, "
        f"{summary.get('max_new_tokens', '?')} new tokens, "
        f"{summary.get('bootstrap', '?')} bootstrap resamples of the prompts for the 95% CIs of "
        "the paired difference (after − before). n.s.: the CI includes zero. "
        f"Before = the reference policy: {summary.get('reference', 'not recorded')}."
    )


def evaluation_section(run: RunData) -> list[Block]:
    blocks: list[Block] = [Heading("Before / after evaluation")]
    summary = run.eval_summary
    if summary is None:
        missing = (
            "Not evaluated yet: this run has no eval.json. "
            "Run `rewardtune evaluate RUN_DIR`, then `rewardtune report RUN_DIR`."
        )
        return [*blocks, Para(missing, note=True)]
    blocks.append(Para(_eval_settings(summary)))
    png = histogram_figure(run.eval_rows) if run.eval_rows else None
    if png is not None:
        blocks.append(Plot(png, "Before/after distributions on held-out prompts"))
    return [
        *blocks,
        metrics_table(summary),
        *toxicity_blocks(summary.get("toxicity")),
        *diversity_kl_blocks(summary),
    ]


def _reward_change(row: dict) -> float:
    before = (row.get("scores_before") or {}).get("reward/total")
    after = (row.get("scores_after") or {}).get("reward/total")
    return after - before if _is_number(before) and _is_number(after) else math.nan


def _last_if_nan(x: float) -> float:
    return math.inf if math.isnan(x) else x


def samples_table(rows: list[dict]) -> Table:
    """Side by side, largest reward gain first (rows without a reward change last)."""
    ranked = sorted(rows, key=lambda r: _last_if_nan(-_reward_change(r)))
    cells = []
    for r in ranked:
        before = (r.get("scores_before") or {}).get("reward/total")
        after = (r.get("scores_after") or {}).get("reward/total")
        change = _reward_change(r)
        tone = "better" if change > 0 else "worse" if change < 0 else ""
        cells.append(
            [
                Cell(str(r.get("prompt", "")), "text"),
                Cell(str(r.get("before", "")), "text"),
                Cell(str(r.get("after", "")), "text"),
                Cell(_num(before), sort=_sort_key(before)),
                Cell(_num(after), sort=_sort_key(after)),
                Cell(_num(change, True), tone, sort=change),
            ]
        )
    columns = ["query", "before", "after", "reward before", "reward after", "diff"]
    return Table(
        columns,
        cells,
        table_id="samples",
        row_class="sample-row",
        numeric={3, 4, 5},
        sorted_desc=5,
        searchable=True,
    )


def side_by_side_section(run: RunData) -> list[Block]:
    blocks: list[Block] = [Heading("Side by side")]
    if not run.eval_rows:
        missing = "No per-prompt evaluation rows yet (eval.jsonl is missing)."
        return [*blocks, Para(missing, note=True)]
    intro = (
        "Responses before and after training, largest reward gain first. "
        "Type to filter; click a column header to sort."
    )
    return [*blocks, Para(intro), samples_table(run.eval_rows)]


def report_blocks(run: RunData) -> list[Block]:
    return [
        *summary_section(run),
        *training_section(run),
        *training_samples_section(run),
        *evaluation_section(run),
        *side_by_side_section(run),
    ]


# --- pages ---------------------------------------------------------------------------

_CSS = """
:root { --fg: #1f2937; --muted: #6b7280; --line: #e5e7eb; --bg: #f5f6f8; --card: #fff;
        --good: #15803d; --good-bg: #dcfce7; --bad: #b91c1c; --bad-bg: #fee2e2; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg); line-height: 1.5; font-size: 15px;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 24px 64px; }
header h1 { font-size: 1.6rem; margin: 8px 0 4px; }
header p { color: var(--muted); margin: 0 0 12px; }
nav { display: flex; flex-wrap: wrap; gap: 6px 16px; margin-bottom: 16px; font-size: 0.9rem; }
nav a { color: #2563eb; text-decoration: none; }
nav a:hover { text-decoration: underline; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
          padding: 4px 24px 20px; margin: 16px 0; }
h2 { font-size: 1.25rem; margin: 18px 0 10px; }
h3 { font-size: 1.05rem; margin: 20px 0 8px; }
p.note { background: #fffbeb; border-left: 4px solid #f59e0b; padding: 8px 12px;
         border-radius: 4px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 20px; margin: 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
figure { margin: 8px 0; }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: var(--muted); font-size: 0.85rem; text-align: center; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; }
table.compact { width: auto; min-width: 50%; }
th, td { padding: 6px 10px; border-bottom: 1px solid var(--line); text-align: left;
         vertical-align: top; }
th { background: #f9fafb; position: sticky; top: 0; cursor: pointer; user-select: none;
     white-space: nowrap; }
th:hover { background: #eef2ff; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
th[aria-sort="ascending"]::after { content: " \\25B2"; font-size: 0.7em; }
th[aria-sort="descending"]::after { content: " \\25BC"; font-size: 0.7em; }
tbody tr:hover { background: #f9fafb; }
td { font-variant-numeric: tabular-nums; }
td.text { white-space: pre-wrap; overflow-wrap: anywhere; min-width: 14em; max-width: 28em; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.9em;
       background: #f3f4f6; padding: 1px 4px; border-radius: 4px; }
td small { display: block; color: var(--muted);
           font-family: ui-monospace, Menlo, Consolas, monospace; }
td.better { color: var(--good); font-weight: 600; }
td.worse { color: var(--bad); font-weight: 600; }
td.verdict.better { background: var(--good-bg); }
td.verdict.worse { background: var(--bad-bg); }
td.ns { opacity: 0.6; font-weight: 400; background: none; }
td.verdict { white-space: nowrap; font-size: 0.85rem; }
.search { display: flex; align-items: center; gap: 12px; margin: 8px 0; }
.search input { flex: 1; max-width: 420px; padding: 6px 10px; font: inherit;
                border: 1px solid #d1d5db; border-radius: 6px; }
.search span { color: var(--muted); font-size: 0.85rem; }
"""

_JS = """
(function () {
  function value(row, col, numeric) {
    var cell = row.cells[col];
    if (!numeric) return cell.textContent.toLowerCase();
    var raw = cell.getAttribute("data-value");
    var x = parseFloat(raw === null ? cell.textContent : raw);
    return isNaN(x) ? -Infinity : x;
  }
  function sortBy(table, th, col) {
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    var numeric = th.classList.contains("num");
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, col, numeric), y = value(b, col, numeric);
      var order = x < y ? -1 : (x > y ? 1 : 0);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter") sortBy(table, th, col);
      });
    });
  });
  document.querySelectorAll("input.filter").forEach(function (input) {
    var id = input.getAttribute("data-table");
    var table = document.getElementById(id), count = document.getElementById(id + "-count");
    input.addEventListener("input", function () {
      var query = input.value.toLowerCase(), rows = table.tBodies[0].rows, shown = 0;
      Array.prototype.forEach.call(rows, function (row) {
        row.hidden = row.textContent.toLowerCase().indexOf(query) === -1;
        if (!row.hidden) shown++;
      });
      count.textContent = shown + " of " + rows.length + " rows";
    });
  });
})();
"""


def _sections_html(blocks: list[Block]) -> str:
    """Each level-2 heading opens a card that holds the blocks up to the next one."""
    parts: list[str] = []
    for block in blocks:
        if isinstance(block, Heading) and block.level == 2:
            parts.append("</section>" if parts else "")
            parts.append("<section>")
        parts.append(block.html())
    return "\n".join(parts) + "\n</section>"


def _nav_html(blocks: list[Block]) -> str:
    links = [
        f'<a href="#{_slug(b.text)}">{_esc(b.text)}</a>'
        for b in blocks
        if isinstance(b, Heading) and b.level == 2
    ]
    return f"<nav>{''.join(links)}</nav>"


def render_html(title: str, subtitle: str, blocks: list[Block]) -> str:
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head>",
            f"<body><main><header><h1>{_esc(title)}</h1><p>{_esc(subtitle)}</p></header>",
            _nav_html(blocks),
            _sections_html(blocks),
            f"</main><script>{_JS}</script></body></html>",
        ]
    )


def render_markdown(title: str, subtitle: str, blocks: list[Block]) -> str:
    parts = [f"# {_md(title)}", _md(subtitle), *(block.markdown() for block in blocks)]
    return "\n\n".join(parts) + "\n"


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` into a run directory.

    Reads config.yaml and whichever of metrics.jsonl, samples.jsonl, run_info.json,
    eval.json and eval.jsonl exist; returns the two paths.
    """
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    title = f"rewardtune report: {run.config.get('recipe', run_dir.name)}"
    subtitle = f"Run directory {run_dir.resolve().name}"
    blocks = report_blocks(run)
    html_path, md_path = run_dir / REPORT_HTML, run_dir / REPORT_MD
    write_atomic(html_path, render_html(title, subtitle, blocks))
    write_atomic(md_path, render_markdown(title, subtitle, blocks))
    return html_path, md_path
