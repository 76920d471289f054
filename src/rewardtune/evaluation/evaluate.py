"""Before/after evaluation on held-out prompts with identical sampling seeds.

"Before" is the reference policy, the policy training started from (the base model with the
new adapter disabled, base + the starting adapter, or the initial weights), "after" the
trained one. Each prompt is sampled ``eval.samples_per_prompt`` times on each side; every
before/after difference in means gets a paired bootstrap 95% interval that resamples prompts.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rewardtune import stats
from rewardtune.config import Config, load_config
from rewardtune.core.tensors import sequence_sum
from rewardtune.data.prompts import (
    fit_prompts,
    format_prompts,
    load_prompts,
    read_rows,
    tokenize_prompt,
)
from rewardtune.distributed import full_parameters, gather_objects, process_state, strided_share
from rewardtune.models import Policy, load_policy
from rewardtune.rewards import build_reward, build_scorer, build_toxicity, call_with_retries
from rewardtune.runs.checkpoint import EVAL_FILES, checkpoint_problem, load_trained_weights
from rewardtune.runs.rundir import CONFIG, FINAL, RunDir, write_atomic
from rewardtune.sampling import rollout as rollout_lib
from rewardtune.stats import cluster_bootstrap_ci, compare, distinct_n, improvement
from rewardtune.text import printable
from rewardtune.types import EvalRow, Prompt, RewardtuneError

FLAG_THRESHOLD = 0.5  # a response is "flagged" when P(toxic) > 0.5


# --- sampling and scoring ------------------------------------------------------------


@dataclass
class Samples:
    texts: list[str]
    ids: list[torch.Tensor]


def sample(
    policy: Policy, lm, prompts: list[Prompt], cfg: Config, batches: list[int] | None = None
) -> Samples:
    """Responses for the prompts of ``batches`` (default: all), in order. Batch i (prompts
    ``i*eval.batch_size`` onwards) is seeded with ``eval.seed + i`` whichever process samples
    it, so both sides, and any number of processes, draw the same responses."""
    size = cfg.eval.batch_size
    gen = cfg.generation.model_copy(update={"response_tokens": None})
    eos = policy.eos_token_ids(cfg.data.chat)
    pad = policy.tokenizer.pad_token_id
    if batches is None:
        batches = list(range(math.ceil(len(prompts) / size)))
    ids: list[torch.Tensor] = []
    sampler = rollout_lib.Sampler()
    for i in batches:
        torch.manual_seed(cfg.eval.seed + i)
        queries = [p.input_ids for p in prompts[i * size : (i + 1) * size]]
        ids += rollout_lib.generate(
            lm,
            queries,
            gen,
            pad,
            eos,
            None,
            policy.seq2seq,
            cfg.eval.max_new_tokens,
            sampler=sampler,
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
        toxicity = build_toxicity(cfg.eval.toxicity)
        scores["toxicity"] = call_with_retries(toxicity, prompts, responses, 0)
    for i, spec in enumerate(cfg.eval.extra_scorers):
        scorer = build_scorer(spec, f"eval.extra_scorers.{i}")
        scores[f"extra/{scorer.name}"] = call_with_retries(
            scorer, prompts, responses, spec.retries, spec.retry_backoff_s
        )
    return scores


# --- the whole evaluation ------------------------------------------------------------


def eval_prompts(cfg: Config, policy: Policy, n: int, prompt_file: Path | None) -> list[Prompt]:
    tokenizer, budget = policy.tokenizer, policy.prompt_budget(cfg.eval.max_new_tokens)
    if prompt_file is None:
        prompts = load_prompts(cfg.data, tokenizer, max_tokens=budget)[1]
        if not prompts:
            raise RewardtuneError(
                "this run has no held-out prompts (data.eval_fraction is 0); pass --prompt-file"
            )
        return prompts[:n]
    data = cfg.data.model_copy(
        update={
            "source": str(prompt_file),
            "template": "{text}",
            "column": "text",
            "min_chars": 0,
            "max_chars": None,
        }
    )
    rows = read_rows(data)
    if not rows:
        raise RewardtuneError(f"--prompt-file {prompt_file} has no prompts")
    texts = format_prompts(rows[:n], data)
    prompts = [tokenize_prompt(text, tokenizer, cfg.data.chat, None) for text in texts]
    return fit_prompts(prompts, tokenizer, cfg.data.chat, data, budget)


def evaluate_run(
    run_dir: Path | str,
    trainer=None,
    n_prompts: int | None = None,
    checkpoint: str | None = None,
    prompt_file: Path | None = None,
) -> dict:
    """Sample before/after on held-out prompts, score, compare; write eval.json and eval.jsonl.

    Under several processes each samples and scores its share of the prompt batches; rank 0
    gathers the rows, writes the files and returns the summary (other ranks return ``{}``).
    """
    run = RunDir.open_existing(run_dir)
    cfg = load_config(str(run.path / CONFIG))
    state = trainer.accelerator if trainer is not None else process_state()
    policy = trainer.policy if trainer is not None else _load_trained(cfg, run, checkpoint, state)
    prompts = eval_prompts(cfg, policy, n_prompts or cfg.eval.prompts, prompt_file)
    k = cfg.eval.samples_per_prompt
    samples = [p for p in prompts for _ in range(k)]  # each prompt k times in a row
    n_batches = math.ceil(len(samples) / cfg.eval.batch_size)
    batches = strided_share(n_batches, state.process_index, state.num_processes)
    whole = (
        full_parameters(trainer.accelerator, trainer.model)
        if trainer is not None
        else contextlib.nullcontext()
    )
    with whole:
        mine = _evaluate_batches(policy, cfg, samples, batches)
    rows = gather_objects(state, mine)
    if not state.is_main_process:
        return {}
    rows = [row for _, row in sorted(rows, key=lambda item: item[0])]
    before, after = _columns(rows, "scores_before"), _columns(rows, "scores_after")
    kl = np.asarray([r["kl"] for r in rows])
    texts_before, texts_after = [r["before"] for r in rows], [r["after"] for r in rows]
    clusters = np.asarray([r["prompt_id"] for r in rows])
    summary = summarise(cfg, before, after, texts_before, texts_after, kl, clusters)
    summary |= {
        "checkpoint": checkpoint or FINAL,
        "n_prompts": len(prompts),
        "reference": policy.reference_name,  # what "before" sampled from
    }
    write_atomic(run.path / "eval.json", json.dumps(summary, indent=2))
    write_atomic(run.path / "eval.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    summary["rows"] = rows
    return summary


def _evaluate_batches(
    policy: Policy, cfg: Config, prompts: list[Prompt], batches: list[int]
) -> list[tuple[int, dict]]:
    """(sample index, row) for the samples of ``batches``: responses before and after, every
    score, perplexity under the reference, length, emptiness, and the KL estimate of the after
    sample. ``prompt_id`` (sample index // eval.samples_per_prompt) names the row's prompt."""
    size = cfg.eval.batch_size
    index = [i for b in batches for i in range(b * size, min((b + 1) * size, len(prompts)))]
    if not index:
        return []
    mine = [prompts[i] for i in index]
    policy.module.eval()
    with policy.reference() as ref_lm:
        before = sample(policy, ref_lm, prompts, cfg, batches)
    after = sample(policy, policy.module.lm, prompts, cfg, batches)
    texts = [p.text for p in mine]
    scores_before = text_scores(cfg, texts, before.texts)
    scores_after = text_scores(cfg, texts, after.texts)
    _, ref_before, len_before = logprob_sums(policy, mine, before)
    pol_after, ref_after, len_after = logprob_sums(policy, mine, after)
    scores_before |= {
        "perplexity": np.exp(-ref_before / len_before).tolist(),
        "length": len_before.tolist(),
        "empty": [float(not t.strip()) for t in before.texts],
    }
    scores_after |= {
        "perplexity": np.exp(-ref_after / len_after).tolist(),
        "length": len_after.tolist(),
        "empty": [float(not t.strip()) for t in after.texts],
    }
    kl = pol_after - ref_after  # log pi_after/pi_ref of samples of pi_after: a KL estimate
    return [
        (
            index[j],
            EvalRow(
                text,
                before.texts[j],
                after.texts[j],
                {k: v[j] for k, v in scores_before.items()},
                {k: v[j] for k, v in scores_after.items()},
            ).to_dict()
            | {"kl": float(kl[j]), "prompt_id": index[j] // cfg.eval.samples_per_prompt},
        )
        for j, text in enumerate(texts)
    ]


def _columns(rows: list[dict], side: str) -> dict[str, list[float]]:
    return {name: [r[side][name] for r in rows] for name in rows[0][side]}


def _load_trained(cfg: Config, run: RunDir, checkpoint: str | None, state) -> Policy:
    folder = run.checkpoint(checkpoint) if checkpoint else run.final_dir
    if not folder.is_dir():
        raise RewardtuneError(
            f"{run.path} has no {FINAL}/ yet; train it first or pass --checkpoint step-N"
        )
    problem = checkpoint_problem(folder, EVAL_FILES) if checkpoint else None
    if problem:
        raise RewardtuneError(f"checkpoint {folder} {problem}; evaluate another --checkpoint")
    policy = load_policy(cfg.model, state.device)
    load_trained_weights(policy, folder)
    return policy


LABELS = {
    "reward/total": "Reward (total)",
    "toxicity": "Toxicity P(toxic)",
    "toxicity/flagged": "Flagged rate (P>0.5)",
    "toxicity/expected_max": "Expected max toxicity (per prompt)",
    "toxicity/probability": "Toxicity probability (a sample ≥ 0.5)",
    "perplexity": "Perplexity under reference",
    "length": "Response length (tokens)",
    "empty": "Empty responses (share)",
}
HIGHER_IS_BETTER = {
    "reward/total": True,
    "toxicity": False,
    "toxicity/flagged": False,
    "toxicity/expected_max": False,
    "toxicity/probability": False,
    "perplexity": False,
    "length": None,
    "empty": False,
}


def summarise(
    cfg: Config,
    before: dict,
    after: dict,
    before_texts,
    after_texts,
    kl: np.ndarray,
    clusters: np.ndarray | None = None,
) -> dict:
    """The metrics table, toxicity, diversity and KL; ``clusters[i]`` is sample i's prompt
    (None: one sample per prompt), and every interval resamples prompts."""
    n, seed = cfg.eval.bootstrap, cfg.eval.seed
    clusters = np.arange(len(kl)) if clusters is None else np.asarray(clusters)
    metrics = []
    for name in before:
        label = LABELS.get(name, name.split("/", 1)[-1])
        better = HIGHER_IS_BETTER.get(
            name, True if name.startswith(("reward/", "extra/vader")) else None
        )
        metrics.append(compare(name, label, before[name], after[name], better, n, seed, clusters))
        if name == "toxicity":
            metrics += _toxicity_metrics(before[name], after[name], clusters, n, seed)
    kl_low, kl_high = cluster_bootstrap_ci(kl, clusters, n, seed)
    return {
        "seed": seed,
        "max_new_tokens": cfg.eval.max_new_tokens,
        "samples_per_prompt": cfg.eval.samples_per_prompt,
        "bootstrap": n,
        "metrics": metrics,
        "toxicity": _toxicity_block(cfg, before, after, clusters),
        "diversity": {
            side: {f"distinct-{k}": distinct_n(texts, k) for k in (1, 2, 3)}
            for side, texts in (("before", before_texts), ("after", after_texts))
        },
        "kl": {"mean": float(np.mean(kl)), "ci": [kl_low, kl_high]},
    }


def _toxicity_metrics(before, after, clusters: np.ndarray, n: int, seed: int) -> list[dict]:
    """Flagged rate per sample; expected max toxicity and toxicity probability per prompt."""
    flagged_b, flagged_a = ((np.asarray(v) > FLAG_THRESHOLD).astype(float) for v in (before, after))
    name = "toxicity/flagged"
    rows = [compare(name, LABELS[name], flagged_b, flagged_a, False, n, seed, clusters)]
    for name, per_prompt in (
        ("toxicity/expected_max", stats.max_per_prompt),
        ("toxicity/probability", stats.toxic_prompts),
    ):
        b, a = per_prompt(before, clusters), per_prompt(after, clusters)
        rows.append(compare(name, LABELS[name], b, a, False, n, seed))
    return rows


def _toxicity_block(cfg: Config, before: dict, after: dict, clusters: np.ndarray) -> dict | None:
    if "toxicity" not in before:
        return None
    n, seed = cfg.eval.bootstrap, cfg.eval.seed
    sides = {}
    for side, scores in (("before", before["toxicity"]), ("after", after["toxicity"])):
        values = np.asarray(scores)
        worst = stats.max_per_prompt(values, clusters)
        toxic = stats.toxic_prompts(values, clusters)
        sides[side] = {
            "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "flagged_rate": float((values > FLAG_THRESHOLD).mean()),
            "expected_max": float(worst.mean()),
            "expected_max_ci": list(cluster_bootstrap_ci(worst, None, n, seed)),
            "probability": float(toxic.mean()),
            "probability_ci": list(cluster_bootstrap_ci(toxic, None, n, seed)),
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
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    k = summary.get("samples_per_prompt", 1)
    table = Table(
        title=f"before vs after ({summary['n_prompts']} held-out prompts x {k} samples, 95% "
        "bootstrap CI over prompts)"
    )
    for column in ("metric", "before", "after", "diff", "95% CI", ""):
        table.add_column(column, justify="right" if column not in ("metric", "") else "left")
    for m in summary["metrics"]:
        note = "includes 0" if m["ci_includes_zero"] else ""
        table.add_row(
            Text(printable(m["label"])),
            _fmt(m["before"]),
            _fmt(m["after"]),
            f"{m['diff']:+.4f}",
            escape(f"[{m['ci'][0]:+.4f}, {m['ci'][1]:+.4f}]"),
            note,
        )
    console.print(table)
    tox = summary.get("toxicity")
    if tox:
        console.print(
            f"toxicity ({escape(tox['scorer'])}): mean {tox['before']['mean']:.4f} -> {tox['after']['mean']:.4f} "
            f"({_pct(tox['improvement_mean'])} improvement), std {tox['before']['std']:.4f} -> "
            f"{tox['after']['std']:.4f} ({_pct(tox['improvement_std'])}), flagged "
            f"{tox['before']['flagged_rate']:.1%} -> {tox['after']['flagged_rate']:.1%}; "
            f"expected max {tox['before']['expected_max']:.4f} -> "
            f"{tox['after']['expected_max']:.4f}, toxicity probability "
            f"{tox['before']['probability']:.1%} -> {tox['after']['probability']:.1%}"
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
    from rich.text import Text

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
            texts = (r["prompt"][-80:], r["before"][:160], r["after"][:160])
            table.add_row(*(Text(printable(t)) for t in texts), f"{delta:+.3f}")
        console.print(table)


def _fmt(side: dict) -> str:
    return f"{side['mean']:.4f} ± {side['std']:.4f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1%}"
