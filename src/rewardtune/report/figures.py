"""The reports' figures, drawn with matplotlib's Agg canvas straight to PNG bytes (no pyplot,
and matplotlib's global backend is left as the user has it)."""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rewardtune.report.formatting import is_number, num
from rewardtune.runs.eval_records import REWARD_TOTAL, EvalRow
from rewardtune.types import STAT

BEFORE_COLOR, AFTER_COLOR = "#8a94a6", "#2563eb"
SIDES = ("before", "after")

_LINE_PANELS = [  # (title, (label, key), second series on its own y axis or None)
    (
        "KL to reference and KL coefficient",
        ("KL", STAT.kl),
        ("KL coef", STAT.kl_coef),
    ),
    ("Losses", ("policy loss", STAT.policy_loss), ("value loss", STAT.value_loss)),
    ("Clip fraction", ("clip fraction", STAT.clipfrac), None),
    (
        "Throughput",
        ("samples/s", STAT.samples_per_s),
        ("tokens/s", STAT.tokens_per_s),
    ),
]


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)  # this figure draws on Agg, whatever matplotlib's backend is
    # No "Software" metadata: matplotlib would put its web address inside the PNG.
    fig.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def series(rows: list[dict], key: str) -> np.ndarray:
    """``row[key]`` of every row as floats; NaN where it is missing or not a finite number."""
    values = [row.get(key) for row in rows]
    return np.array([v if is_number(v) else np.nan for v in values], dtype=np.float64)


def has(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).any())


def style_panel(ax, title: str) -> None:
    """The look every per-step panel shares."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


# --- one run's training curves -------------------------------------------------------


def _plot_lines(ax, steps: np.ndarray, metrics: list[dict], left, right) -> None:
    """One or two series on one panel; the second on its own y axis (their scales differ)."""
    handles = ax.plot(steps, series(metrics, left[1]), color=AFTER_COLOR, label=left[0])
    top = ax
    if right is not None and has(series(metrics, right[1])):
        top = ax.twinx()  # drawn over ax: the legend goes on it so no line crosses it
        values = series(metrics, right[1])
        handles += top.plot(steps, values, color="#ea580c", linestyle="--", label=right[0])
        top.tick_params(labelsize=8)
    top.legend(handles=handles, fontsize=8, loc="best", framealpha=0.9)


def _plot_reward(ax, steps: np.ndarray, metrics: list[dict]) -> None:
    mean, std = series(metrics, STAT.reward_mean), series(metrics, STAT.reward_std)
    ax.plot(steps, mean, color=AFTER_COLOR, label="reward mean")
    if has(std):
        ax.fill_between(steps, mean - std, mean + std, color=AFTER_COLOR, alpha=0.2, label="± std")
    ax.legend(fontsize=8, loc="best")


def _plot_step_time(ax, steps: np.ndarray, metrics: list[dict]) -> None:
    keys = (STAT.time_rollout, STAT.time_reward, STAT.time_update)
    values = [np.nan_to_num(series(metrics, k)) for k in keys]
    labels = [k.split("/")[1] for k in keys]
    ax.stackplot(steps, *values, labels=labels, colors=["#93c5fd", "#fcd34d", "#86efac"])
    ax.legend(fontsize=8, loc="upper left")


def _training_panels(metrics: list[dict]) -> list[tuple[str, Callable]]:
    """(title, draw(ax, steps, metrics)) for each panel whose data exists."""
    panels = [("Reward (mean ± std)", STAT.reward_mean, _plot_reward)]
    for title, left, right in _LINE_PANELS:
        panels.append((title, left[1], functools.partial(_plot_lines, left=left, right=right)))
    panels.append(("Seconds per step", STAT.time_update, _plot_step_time))
    return [(title, draw) for title, key, draw in panels if has(series(metrics, key))]


def training_figure(metrics: list[dict]) -> bytes | None:
    """The training curves as one PNG, or None when no panel has data."""
    panels = _training_panels(metrics)
    if not panels:
        return None
    steps = series(metrics, "step")
    steps = steps if has(steps) else np.arange(len(metrics), dtype=np.float64)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.1 * nrows), layout="constrained")
    for i, (title, draw) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        draw(ax, steps, metrics)
        style_panel(ax, title)
    return png(fig)


def eval_history_figure(history: list[dict]) -> bytes | None:
    """eval.every's held-out evaluations during training: one panel per metric (reward,
    its terms, the checks, toxicity, KL) over the step; None without any."""
    keys = [k for k in dict.fromkeys(k for row in history for k in row) if k != "step"]
    keys = [k for k in keys if has(series(history, k))]
    if not keys:
        return None
    steps = series(history, "step")
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.1 * nrows), layout="constrained")
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.plot(steps, series(history, key), color=AFTER_COLOR, marker="o", markersize=3)
        style_panel(ax, f"held-out {key}")
    return png(fig)


# --- several runs' curves overlaid ---------------------------------------------------


def overlay_figure(
    runs: list[tuple[str, list[dict]]], curves: list[tuple[str, str]]
) -> bytes | None:
    """One panel per ``(title, key)`` in ``curves`` that some run logged, one line per
    ``(name, metrics)`` run; None when no run logged any."""
    panels = [(t, k) for t, k in curves if any(has(series(rows, k)) for _, rows in runs)]
    if not panels:
        return None
    fig = Figure(figsize=(8.4, 3.1 * math.ceil(len(panels) / 2)), layout="constrained")
    for i, (title, key) in enumerate(panels):
        ax = fig.add_subplot(math.ceil(len(panels) / 2), 2, i + 1)
        for name, rows in runs:
            ax.plot(series(rows, "step"), series(rows, key), label=name)
        style_panel(ax, title)
        ax.legend(fontsize=8)
    return png(fig)


# --- before/after distributions ------------------------------------------------------


def eval_scores(rows: list[EvalRow], side: str, key: str) -> np.ndarray:
    """The finite ``scores_<side>[key]`` of the eval rows."""
    values = series([getattr(row, f"scores_{side}") for row in rows], key)
    return values[np.isfinite(values)]


def histogram_figure(rows: list[EvalRow], keys: tuple[str, ...] = (REWARD_TOTAL, "toxicity")):
    """Before/after histograms of each score in ``keys`` found in eval.jsonl, or None."""
    present = [k for k in keys if all(len(eval_scores(rows, side, k)) for side in SIDES)]
    if not present:
        return None
    fig = Figure(figsize=(5.2 * len(present), 3.2), layout="constrained")
    for i, key in enumerate(present):
        ax = fig.add_subplot(1, len(present), i + 1)
        before, after = eval_scores(rows, "before", key), eval_scores(rows, "after", key)
        bins = np.histogram_bin_edges(np.concatenate([before, after]), bins=20)
        sides = (("before", before, BEFORE_COLOR), ("after", after, AFTER_COLOR))
        for name, values, color in sides:
            label = f"{name} (mean {num(values.mean())})"
            ax.hist(values, bins=bins, alpha=0.55, color=color, label=label)
            ax.axvline(values.mean(), color=color, linestyle="--", linewidth=1.2)
        ax.set_title(key, fontsize=10)
        ax.set_ylabel("prompts", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8)
    return png(fig)
