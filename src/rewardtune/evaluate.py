"""Before/after evaluation on held-out prompts with identical sampling seeds.

"Before" is the reference policy (adapter disabled, or the initial weights), "after" the
trained one. Every before/after difference in means gets a paired bootstrap 95% interval.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rewardtune import rollout as rollout_lib
from rewardtune.config import Config, load_config
from rewardtune.data import load_prompts, read_rows, tokenize_prompt
from rewardtune.models import Policy, load_policy, load_trained_weights
from rewardtune.ppo.core import sequence_sum
from rewardtune.rewards import build_reward, build_scorer, build_toxicity
from rewardtune.runs import CONFIG, FINAL, RunDir, write_atomic
from rewardtune.types import EvalRow, Prompt, RewardtuneError

FLAG_THRESHOLD = 0.5  # a response is "flagged" when P(toxic) > 0.5


# --- statistics (pure functions) -----------------------------------------------------


def bootstrap_ci(
    diffs: np.ndarray, n_resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of paired differences (after - before)."""
    diffs = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), size=(n_resamples, len(diffs)))
    means = diffs[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def distinct_n(texts: list[str], n: int) -> float:
    """Unique word n-grams / all word n-grams over every response (Li et al. 2016)."""
    grams = []
    for text in texts:
        words = text.lower().split()
        grams.extend(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    return len(set(grams)) / len(grams) if grams else 0.0


def describe(values: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
    }


def compare(
    name: str, label: str, before, after, higher_is_better, n_resamples: int, seed: int
) -> dict:
    """One row of the metrics table: before/after summaries and the paired difference."""
    before, after = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    low, high = bootstrap_ci(after - before, n_resamples, seed)
    return {
        "name": name,
        "label": label,
        "higher_is_better": higher_is_better,
        "before": describe(before),
        "after": describe(after),
        "diff": float(np.mean(after - before)),
        "ci": [low, high],
        "ci_includes_zero": bool(low <= 0.0 <= high),
    }


def improvement(before: float, after: float) -> float | None:
    """(before - after) / before, as the original notebooks print it."""
    return (before - after) / before if before else None


# --- sampling and scoring ------------------------------------------------------------


@dataclass
class Samples:
    texts: list[str]
    ids: list[torch.Tensor]


def sample(policy: Policy, lm, prompts: list[Prompt], cfg: Config, batch_size: int) -> Samples:
    """Responses for every prompt; batch i is seeded with ``eval.seed + i`` (same for both sides)."""
    gen = cfg.generation.model_copy(update={"response_tokens": None})
    eos = policy.eos_token_ids(cfg.data.chat)
    pad = policy.tokenizer.pad_token_id
    ids: list[torch.Tensor] = []
    for i, start in enumerate(range(0, len(prompts), batch_size)):
        torch.manual_seed(cfg.eval.seed + i)
        queries = [p.input_ids for p in prompts[start : start + batch_size]]
        ids += rollout_lib.generate(
            lm, queries, gen, pad, eos, None, policy.seq2seq, cfg.eval.max_new_tokens
        ).responses
    texts = policy.tokenizer.batch_decode(ids, skip_special_tokens=True)
    return Samples(texts, [r if len(r) else torch.tensor([pad]) for r in ids])


def logprob_sums(
    policy: Policy, prompts: list[Prompt], samples: Samples
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per response: sum log pi_after, sum log pi_ref, and the token count."""
    queries = [p.input_ids for p in prompts]
    scored = rollout_lib.score(
        policy.module, policy.reference, queries, samples.ids, policy.tokenizer.pad_token_id, 16
    )
    mask = scored.response_mask
    return (
        sequence_sum(scored.logprobs, mask).cpu().numpy(),
        sequence_sum(scored.ref_logprobs, mask).cpu().numpy(),
        mask.sum(1).cpu().numpy().astype(np.float64),
    )


def text_scores(cfg: Config, prompts: list[str], responses: list[str]) -> dict[str, list[float]]:
    """Every reward term and the total, the toxicity, and the extra scorers."""
    reward = build_reward(cfg.reward)
    scores = {"reward/total": reward(prompts, responses)}
    if len(reward.terms) > 1:
        scores |= {f"reward/{name}": values for name, values in reward.last_terms.items()}
    if cfg.eval.toxicity is not None:
        scores["toxicity"] = build_toxicity(cfg.eval.toxicity)(prompts, responses)
    for i, spec in enumerate(cfg.eval.extra_scorers):
        scorer = build_scorer(spec, f"eval.extra_scorers.{i}")
        scores[f"extra/{scorer.name}"] = [float(s) for s in scorer(prompts, responses)]
    return scores


# --- the whole evaluation ------------------------------------------------------------


def eval_prompts(cfg: Config, tokenizer, n: int, prompt_file: Path | None) -> list[Prompt]:
    if prompt_file is None:
        prompts = load_prompts(cfg.data, tokenizer)[1]
        if not prompts:
            raise RewardtuneError(
                "this run has no held-out prompts (data.eval_fraction is 0); pass --prompt-file"
            )
        return prompts[:n]
    data = cfg.data.model_copy(
        update={"source": str(prompt_file), "template": "{text}", "column": "text"}
    )
    rows = read_rows(data)
    if not rows:
        raise RewardtuneError(f"--prompt-file {prompt_file} has no prompts")
    return [tokenize_prompt(r["text"], tokenizer, cfg.data.chat, None) for r in rows[:n]]


def evaluate_run(
    run_dir: Path | str,
    trainer=None,
    n_prompts: int | None = None,
    checkpoint: str | None = None,
    prompt_file: Path | None = None,
) -> dict:
    """Sample before/after on held-out prompts, score, compare; write eval.json and eval.jsonl."""
    run = RunDir.open_existing(run_dir)
    cfg = load_config(str(run.path / CONFIG))
    policy = trainer.policy if trainer is not None else _load_trained(cfg, run, checkpoint)
    prompts = eval_prompts(cfg, policy.tokenizer, n_prompts or cfg.eval.prompts, prompt_file)
    module = policy.module
    module.eval()
    with policy.reference() as ref_lm:
        before = sample(policy, ref_lm, prompts, cfg, cfg.eval.batch_size)
    after = sample(policy, module.lm, prompts, cfg, cfg.eval.batch_size)
    texts = [p.text for p in prompts]
    scores_before = text_scores(cfg, texts, before.texts)
    scores_after = text_scores(cfg, texts, after.texts)
    _, ref_before, len_before = logprob_sums(policy, prompts, before)
    pol_after, ref_after, len_after = logprob_sums(policy, prompts, after)
    scores_before |= {
        "perplexity": np.exp(-ref_before / len_before).tolist(),
        "length": len_before.tolist(),
    }
    scores_after |= {
        "perplexity": np.exp(-ref_after / len_after).tolist(),
        "length": len_after.tolist(),
    }
    kl = pol_after - ref_after  # log pi_after/pi_ref of samples of pi_after: a KL estimate
    summary = summarise(cfg, scores_before, scores_after, before.texts, after.texts, kl)
    summary |= {"checkpoint": checkpoint or FINAL, "n_prompts": len(prompts)}
    rows = [
        EvalRow(
            p,
            b,
            a,
            {k: v[i] for k, v in scores_before.items()},
            {k: v[i] for k, v in scores_after.items()},
        ).to_dict()
        | {"kl": float(kl[i])}
        for i, (p, b, a) in enumerate(zip(texts, before.texts, after.texts, strict=True))
    ]
    write_atomic(run.path / "eval.json", json.dumps(summary, indent=2))
    write_atomic(run.path / "eval.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    summary["rows"] = rows
    return summary


def _load_trained(cfg: Config, run: RunDir, checkpoint: str | None) -> Policy:
    folder = run.checkpoint(checkpoint) if checkpoint else run.final_dir
    if not folder.is_dir():
        raise RewardtuneError(
            f"{run.path} has no {FINAL}/ yet; train it first or pass --checkpoint step-N"
        )
    policy = load_policy(cfg.model)
    load_trained_weights(policy, folder)
    return policy


LABELS = {
    "reward/total": "Reward (total)",
    "toxicity": "Toxicity P(toxic)",
    "toxicity/flagged": "Flagged rate (P>0.5)",
    "perplexity": "Perplexity under reference",
    "length": "Response length (tokens)",
}
HIGHER_IS_BETTER = {
    "reward/total": True,
    "toxicity": False,
    "toxicity/flagged": False,
    "perplexity": False,
    "length": None,
}


def summarise(
    cfg: Config, before: dict, after: dict, before_texts, after_texts, kl: np.ndarray
) -> dict:
    n, seed = cfg.eval.bootstrap, cfg.eval.seed
    metrics = []
    for name in before:
        label = LABELS.get(name, name.split("/", 1)[-1])
        better = HIGHER_IS_BETTER.get(
            name, True if name.startswith(("reward/", "extra/vader")) else None
        )
        metrics.append(compare(name, label, before[name], after[name], better, n, seed))
        if name == "toxicity":
            flagged_b = (np.asarray(before[name]) > FLAG_THRESHOLD).astype(float)
            flagged_a = (np.asarray(after[name]) > FLAG_THRESHOLD).astype(float)
            metrics.append(
                compare(
                    "toxicity/flagged",
                    LABELS["toxicity/flagged"],
                    flagged_b,
                    flagged_a,
                    False,
                    n,
                    seed,
                )
            )
    kl_low, kl_high = bootstrap_ci(kl, n, seed)
    return {
        "seed": seed,
        "max_new_tokens": cfg.eval.max_new_tokens,
        "bootstrap": n,
        "metrics": metrics,
        "toxicity": _toxicity_block(cfg, before, after),
        "diversity": {
            side: {f"distinct-{k}": distinct_n(texts, k) for k in (1, 2, 3)}
            for side, texts in (("before", before_texts), ("after", after_texts))
        },
        "kl": {"mean": float(np.mean(kl)), "ci": [kl_low, kl_high]},
    }


def _toxicity_block(cfg: Config, before: dict, after: dict) -> dict | None:
    if "toxicity" not in before:
        return None
    sides = {}
    for side, scores in (("before", before["toxicity"]), ("after", after["toxicity"])):
        values = np.asarray(scores)
        sides[side] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "flagged_rate": float((values > FLAG_THRESHOLD).mean()),
        }
    return {
        "scorer": cfg.eval.toxicity.type,
        **sides,
        "improvement_mean": improvement(sides["before"]["mean"], sides["after"]["mean"]),
        "improvement_std": improvement(sides["before"]["std"], sides["after"]["std"]),
    }


# --- printing ------------------------------------------------------------------------


def print_summary(summary: dict, console) -> None:
    """A rich table of the metrics, then the top and bottom 5 samples by reward change."""
    from rich.table import Table

    table = Table(
        title=f"before vs after ({summary['n_prompts']} held-out prompts, 95% bootstrap CI)"
    )
    for column in ("metric", "before", "after", "diff", "95% CI", ""):
        table.add_column(column, justify="right" if column not in ("metric", "") else "left")
    for m in summary["metrics"]:
        note = "includes 0" if m["ci_includes_zero"] else ""
        table.add_row(
            m["label"],
            _fmt(m["before"]),
            _fmt(m["after"]),
            f"{m['diff']:+.4f}",
            f"[{m['ci'][0]:+.4f}, {m['ci'][1]:+.4f}]",
            note,
        )
    console.print(table)
    tox = summary.get("toxicity")
    if tox:
        console.print(
            f"toxicity ({tox['scorer']}): mean {tox['before']['mean']:.4f} -> {tox['after']['mean']:.4f} "
            f"({_pct(tox['improvement_mean'])} improvement), std {tox['before']['std']:.4f} -> "
            f"{tox['after']['std']:.4f} ({_pct(tox['improvement_std'])}), flagged "
            f"{tox['before']['flagged_rate']:.1%} -> {tox['after']['flagged_rate']:.1%}"
        )
    div = summary["diversity"]
    console.print(
        "distinct-1/2/3: before "
        + "/".join(f"{v:.3f}" for v in div["before"].values())
        + ", after "
        + "/".join(f"{v:.3f}" for v in div["after"].values())
        + f"; KL(after||before) {summary['kl']['mean']:.3f} nats"
    )
    _print_extremes(summary.get("rows", []), console)


def _print_extremes(rows: list[dict], console) -> None:
    from rich.table import Table

    if not rows:
        return
    ranked = sorted(
        rows,
        key=lambda r: r["scores_after"]["reward/total"] - r["scores_before"]["reward/total"],
        reverse=True,
    )
    for title, chosen in (
        ("largest reward gains", ranked[:5]),
        ("largest reward losses", ranked[::-1][:5]),
    ):
        table = Table(title=title, show_lines=True)
        for column in ("prompt", "before", "after", "Δ reward"):
            table.add_column(column, overflow="fold")
        for r in chosen:
            delta = r["scores_after"]["reward/total"] - r["scores_before"]["reward/total"]
            table.add_row(r["prompt"][-80:], r["before"][:160], r["after"][:160], f"{delta:+.3f}")
        console.print(table)


def _fmt(side: dict) -> str:
    return f"{side['mean']:.4f} ± {side['std']:.4f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1%}"
