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
from pathlib import Path

import numpy as np

from rewardtune.config import Config, EvalConfig, load_config
from rewardtune.data.columns import column_lists
from rewardtune.distributed import full_parameters, gather_objects, process_state, strided_share
from rewardtune.evaluation.eval_sets import EvalSet, eval_sets
from rewardtune.evaluation.metrics import Measured, sample_measures
from rewardtune.evaluation.samples import Draw, load_trained, reference_sums, sample
from rewardtune.evaluation.scoring import Scorers
from rewardtune.evaluation.summary import summarise
from rewardtune.models import Policy
from rewardtune.runs.eval_records import EvalRow, EvalSection, EvalSummary
from rewardtune.runs.rundir import (
    CONFIG,
    EVAL,
    EVAL_ROWS,
    EVAL_SECTION_ROWS,
    FINAL,
    RunDir,
    write_atomic,
)
from rewardtune.types import Prompt, RewardtuneError


def evaluate_run(
    run_dir: Path | str,
    trainer=None,
    n_prompts: int | None = None,
    checkpoint: str | None = None,
    prompt_file: Path | None = None,
    overrides: list[str] | None = None,
) -> EvalSummary | None:
    """Sample before/after on held-out prompts, score, compare; write eval.json and eval.jsonl.

    The held-out prompts in the first form of ``eval.forms`` are the primary evaluation (the
    summary, eval.jsonl); every other (prompt set, form) is a section of it (eval.json's
    ``sections``, eval_sections.jsonl). Under several processes each samples and scores its
    share of each set's prompt batches; rank 0 gathers the rows, writes the files and returns
    the summary (other ranks return None). ``overrides`` (``eval.KEY=VALUE``) change the
    run's eval settings for this evaluation; eval.json records them.
    """
    run = RunDir.open_existing(run_dir)
    # the trainer's config holds what a resume's --set changed, and the secrets that
    # config.yaml keeps redacted
    cfg = (
        trainer.config
        if trainer is not None
        else load_config(str(run.path / CONFIG), eval_overrides(overrides or []))
    )
    state = trainer.accelerator if trainer is not None else process_state()
    if trainer is not None:
        policy = trainer.policy
    else:
        policy = load_trained(cfg.model, run, checkpoint, state.device)
    budget = policy.prompt_budget(cfg.eval.max_new_tokens)
    sets = eval_sets(cfg, policy.tokenizer, budget, n_prompts or cfg.eval.prompts, prompt_file)
    whole = (
        full_parameters(trainer.accelerator, trainer.model)
        if trainer is not None
        else contextlib.nullcontext()
    )
    scorers = Scorers.build(cfg.reward, cfg.eval)
    with whole:
        shares = [_evaluate_set(policy, cfg, scorers, s, state) for s in sets]
    gathered = [gather_objects(state, mine) for mine in shares]
    if not state.is_main_process:
        return None
    summary = _summarise_sets(
        cfg.eval, sets, gathered, checkpoint or FINAL, policy.reference_name, scorers.directions
    )
    summary.overrides = list(overrides or [])
    _write(run, summary)
    return summary


def eval_overrides(overrides: list[str]) -> list[str]:
    """``evaluate --set`` values: only eval.KEY=VALUE (training's settings are the run's)."""
    for text in overrides:
        if not text.startswith("eval."):
            raise RewardtuneError(
                f"--set {text!r}: evaluate changes only eval settings (eval.KEY=VALUE, e.g. "
                "eval.samples_per_prompt=4); the rest is the run's own"
            )
    return overrides


def _summarise_sets(
    ev: EvalConfig,
    sets: list[EvalSet],
    gathered: list[list],
    checkpoint: str,
    reference: str,
    directions: dict[str, bool | None],
) -> EvalSummary:
    """The primary set's summary, with every other set's as its sections; ``directions``:
    ``Scorers.directions``."""
    summaries = []
    for eval_set, pairs in zip(sets, gathered, strict=True):
        rows = [row for _, row in sorted(pairs, key=lambda p: p[0])]
        summary = _summarise_rows(ev, rows, directions)
        summary.checkpoint, summary.reference = checkpoint, reference
        summary.n_prompts = len(eval_set.prompts)
        summaries.append(summary)
    primary, *others = summaries
    primary.sections = [
        EvalSection(s.name, s.form, summary) for s, summary in zip(sets[1:], others, strict=True)
    ]
    return primary


def _write(run: RunDir, summary: EvalSummary) -> None:
    """eval.json, eval.jsonl, and the sections' rows (tagged with their prompts and form)
    in eval_sections.jsonl, which is removed when there is no section."""
    write_atomic(run.path / EVAL, json.dumps(summary.to_dict(), indent=2))
    write_atomic(
        run.path / EVAL_ROWS, "".join(json.dumps(r.to_dict()) + "\n" for r in summary.rows)
    )
    section_rows = [
        {"prompts": s.prompts, "form": s.form} | r.to_dict()
        for s in summary.sections
        for r in s.summary.rows
    ]
    if section_rows:
        write_atomic(
            run.path / EVAL_SECTION_ROWS, "".join(json.dumps(r) + "\n" for r in section_rows)
        )
    else:
        (run.path / EVAL_SECTION_ROWS).unlink(missing_ok=True)


def _evaluate_set(
    policy: Policy, cfg: Config, scorers: Scorers, eval_set: EvalSet, state
) -> list[tuple[int, EvalRow]]:
    """This process's (sample index, row) pairs of one set: each prompt
    ``eval.samples_per_prompt`` times in a row, in batches dealt out across processes."""
    k = cfg.eval.samples_per_prompt
    samples = [p for p in eval_set.prompts for _ in range(k)]
    batches = strided_share(
        math.ceil(len(samples) / cfg.eval.batch_size), state.process_index, state.num_processes
    )
    draw = Draw.of(cfg, eval_set.chat)
    return _evaluate_batches(policy, draw, scorers, samples, batches, k)


def _summarise_rows(
    ev: EvalConfig, rows: list[EvalRow], directions: dict[str, bool | None]
) -> EvalSummary:
    summary = summarise(
        ev,
        {name: [r.scores_before[name] for r in rows] for name in rows[0].scores_before},
        {name: [r.scores_after[name] for r in rows] for name in rows[0].scores_after},
        ([r.before for r in rows], [r.after for r in rows]),
        np.asarray([r.kl for r in rows]),
        np.asarray([r.prompt_id for r in rows]),
        directions,
    )
    summary.rows = rows
    return summary


def _evaluate_batches(
    policy: Policy,
    draw: Draw,
    scorers: Scorers,
    prompts: list[Prompt],
    batches: list[int],
    samples_per_prompt: int,
) -> list[tuple[int, EvalRow]]:
    """(sample index, row) for the samples of ``batches``: responses before and after, every
    score, perplexity under the reference, length, emptiness, and the KL estimate of the after
    sample. ``prompt_id`` (sample index // samples_per_prompt) names the row's prompt."""
    size = draw.batch_size
    index = [i for b in batches for i in range(b * size, min((b + 1) * size, len(prompts)))]
    if not index:
        return []
    mine = [prompts[i] for i in index]
    policy.module.eval()
    with policy.reference() as ref_lm:
        before = sample(policy, ref_lm, prompts, draw, batches)
    after = sample(policy, policy.module.lm, prompts, draw, batches)
    texts, columns = [p.text for p in mine], column_lists(mine)
    scores_before = scorers.score(texts, before.texts, columns)
    scores_after = scorers.score(texts, after.texts, columns)
    # perplexity: one reference pass per side, the same computation on both, so equal
    # responses get equal values; log pi_after of the after side is kept from sampling
    ref_before, len_before = reference_sums(policy, mine, before), before.token_counts()
    pol_after, len_after = after.logprob_sums(), after.token_counts()
    ref_after = reference_sums(policy, mine, after)
    scores_before |= sample_measures(Measured(before.texts, ref_before, len_before))
    scores_after |= sample_measures(Measured(after.texts, ref_after, len_after))
    kl = pol_after - ref_after  # log pi_after/pi_ref of samples of pi_after: a KL estimate
    return [
        (
            index[j],
            EvalRow(
                text,
                before.texts[j],
                after.texts[j],
                {name: v[j] for name, v in scores_before.items()},
                {name: v[j] for name, v in scores_after.items()},
                kl=float(kl[j]),
                prompt_id=index[j] // samples_per_prompt,
            ),
        )
        for j, text in enumerate(texts)
    ]
