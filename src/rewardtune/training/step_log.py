"""Where a step's stats and samples go: metrics.jsonl and samples.jsonl of the run, and the
configured trackers."""

from __future__ import annotations

import math

import numpy as np
import torch

from rewardtune import distributed
from rewardtune.runs.rundir import METRICS, SAMPLES, RunDir


def log_step(
    accelerator,
    run: RunDir | None,
    step: int,
    stats: dict[str, float],
    samples: tuple[list[str], list[str] | None, list[float]],
    n_samples: int,
) -> None:
    """``stats`` into metrics.jsonl and the trackers; the first ``n_samples`` of ``samples``
    (queries, response texts or None, rewards) into samples.jsonl and a tracker table."""
    queries, texts, rewards = samples
    if run is not None:
        run.append(METRICS, [{"step": step, **stats}])
        if n_samples and texts is not None:
            rows = [
                {"step": step, "prompt": q, "response": r, "reward": float(s)}
                for q, r, s in list(zip(queries, texts, floats(rewards), strict=False))[:n_samples]
            ]
            run.append(SAMPLES, rows)
            table = [[r["prompt"], r["response"], r["reward"]] for r in rows]
            distributed.log_table(
                accelerator, "samples", ["prompt", "response", "reward"], table, step
            )
    if accelerator.trackers:
        accelerator.log({k: v for k, v in stats.items() if _is_number(v)}, step=step)


def term_means(terms: dict[str, list[float]]) -> dict[str, float]:
    """The mean of each term of a reward with several (logged as ``env/reward/<name>``)."""
    if len(terms) < 2:
        return {}
    return {name: float(np.mean(values)) for name, values in terms.items()}


def floats(values) -> list[float]:
    if torch.is_tensor(values):
        return values.flatten().tolist()
    return [float(v.item()) if torch.is_tensor(v) else float(v) for v in values]


def _is_number(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
