"""The summary of an evaluation: one ``stats.compare`` row per metric, the toxicity block,
diversity and KL. Every interval resamples prompts (``clusters[i]`` is sample i's prompt)."""

from __future__ import annotations

import numpy as np

from rewardtune import stats
from rewardtune.config import EvalConfig
from rewardtune.evaluation.metrics import (
    FLAG_THRESHOLD,
    TOXICITY,
    TOXICITY_METRICS,
    binary_metrics,
    metric,
    sentiment_metrics,
)
from rewardtune.runs.eval_records import EvalSummary
from rewardtune.stats import cluster_bootstrap_ci, compare, distinct_n, improvement


def summarise(
    ev: EvalConfig,
    before: dict[str, list[float]],
    after: dict[str, list[float]],
    texts: tuple[list[str], list[str]],
    kl: np.ndarray,
    clusters: np.ndarray | None = None,
    directions: dict[str, bool | None] | None = None,
) -> EvalSummary:
    """The metrics table, toxicity, diversity and KL of the before/after ``texts`` and their
    scores; ``clusters`` None: one sample per prompt; ``directions``: whether a rise is good,
    for the extra scorers' columns (``Scorers.directions``)."""
    n, seed = ev.bootstrap, ev.seed
    clusters = np.arange(len(kl)) if clusters is None else np.asarray(clusters)
    metrics = []
    for name in before:
        m = metric(name, (directions or {}).get(name))
        metrics.append(
            compare(name, m.label, before[name], after[name], m.higher_is_better, n, seed, clusters)
        )
        if name == TOXICITY:
            metrics += _toxicity_metrics(before[name], after[name], clusters, n, seed)
        metrics += _derived(sentiment_metrics(name), before[name], after[name], clusters, n, seed)
        k = ev.samples_per_prompt
        checks = binary_metrics(name, before[name], after[name], k)
        metrics += _derived(checks, before[name], after[name], clusters, n, seed)
    kl_low, kl_high = cluster_bootstrap_ci(kl, clusters, n, seed)
    return EvalSummary(
        seed=seed,
        max_new_tokens=ev.max_new_tokens,
        samples_per_prompt=ev.samples_per_prompt,
        bootstrap=n,
        metrics=metrics,
        toxicity=_toxicity_block(ev, before, after, clusters),
        diversity={
            side: {f"distinct-{k}": distinct_n(side_texts, k) for k in (1, 2, 3)}
            for side, side_texts in zip(("before", "after"), texts, strict=True)
        },
        kl={"mean": float(np.mean(kl)), "ci": [kl_low, kl_high]},
    )


def _toxicity_metrics(before, after, clusters: np.ndarray, n: int, seed: int) -> list[dict]:
    """Flagged rate per sample; expected max toxicity and toxicity probability per prompt
    (their intervals resample the per-prompt values)."""
    return _derived(TOXICITY_METRICS, before, after, clusters, n, seed)


def _derived(metrics, before, after, clusters: np.ndarray, n: int, seed: int) -> list[dict]:
    """One ``compare`` row per metric computed from one score column's before/after."""
    rows = []
    for m in metrics:
        b, a = m.compute(before, clusters), m.compute(after, clusters)
        over = None if m.per_prompt else clusters
        rows.append(compare(m.name, m.label, b, a, m.higher_is_better, n, seed, over))
    return rows


def _toxicity_block(ev: EvalConfig, before: dict, after: dict, clusters: np.ndarray) -> dict | None:
    if TOXICITY not in before:
        return None
    sides = {
        side: _toxicity_side(np.asarray(scores[TOXICITY]), clusters, ev.bootstrap, ev.seed)
        for side, scores in (("before", before), ("after", after))
    }
    return {
        "scorer": ev.toxicity.type,
        **sides,
        "improvement_mean": improvement(sides["before"]["mean"], sides["after"]["mean"]),
        "improvement_std": improvement(sides["before"]["std"], sides["after"]["std"]),
    }


def _toxicity_side(values: np.ndarray, clusters: np.ndarray, n: int, seed: int) -> dict:
    worst = stats.max_per_prompt(values, clusters)
    toxic = stats.toxic_prompts(values, clusters)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
        "flagged_rate": float((values > FLAG_THRESHOLD).mean()),
        "expected_max": float(worst.mean()),
        "expected_max_ci": list(cluster_bootstrap_ci(worst, None, n, seed)),
        "probability": float(toxic.mean()),
        "probability_ci": list(cluster_bootstrap_ci(toxic, None, n, seed)),
    }
