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

from rewardtune.config import EvalConfig, load_config
from rewardtune.distributed import full_parameters, gather_objects, process_state, strided_share
from rewardtune.evaluation.metrics import Measured, sample_measures
from rewardtune.evaluation.records import EvalRow, EvalSummary
from rewardtune.evaluation.samples import (
    Draw,
    eval_prompts,
    load_trained,
    logprob_sums,
    sample,
)
from rewardtune.evaluation.scoring import Scorers
from rewardtune.evaluation.summary import summarise
from rewardtune.models import Policy
from rewardtune.runs.rundir import CONFIG, EVAL, EVAL_ROWS, FINAL, RunDir, write_atomic
from rewardtune.types import Prompt


def evaluate_run(
    run_dir: Path | str,
    trainer=None,
    n_prompts: int | None = None,
    checkpoint: str | None = None,
    prompt_file: Path | None = None,
) -> EvalSummary | None:
    """Sample before/after on held-out prompts, score, compare; write eval.json and eval.jsonl.

    Under several processes each samples and scores its share of the prompt batches; rank 0
    gathers the rows, writes the files and returns the summary (other ranks return None).
    """
    run = RunDir.open_existing(run_dir)
    cfg = load_config(str(run.path / CONFIG))
    state = trainer.accelerator if trainer is not None else process_state()
    if trainer is not None:
        policy = trainer.policy
    else:
        policy = load_trained(cfg.model, run, checkpoint, state.device)
    prompts = eval_prompts(cfg.data, cfg.eval, policy, n_prompts or cfg.eval.prompts, prompt_file)
    k = cfg.eval.samples_per_prompt
    samples = [p for p in prompts for _ in range(k)]  # each prompt k times in a row
    batches = strided_share(
        math.ceil(len(samples) / cfg.eval.batch_size), state.process_index, state.num_processes
    )
    whole = (
        full_parameters(trainer.accelerator, trainer.model)
        if trainer is not None
        else contextlib.nullcontext()
    )
    scorers = Scorers.build(cfg.reward, cfg.eval)
    with whole:
        mine = _evaluate_batches(policy, Draw.of(cfg), scorers, samples, batches, k)
    gathered = gather_objects(state, mine)
    if not state.is_main_process:
        return None
    rows = [row for _, row in sorted(gathered, key=lambda item: item[0])]
    summary = _summarise_rows(cfg.eval, rows)
    summary.checkpoint = checkpoint or FINAL
    summary.n_prompts = len(prompts)
    summary.reference = policy.reference_name  # what "before" sampled from
    write_atomic(run.path / EVAL, json.dumps(summary.to_dict(), indent=2))
    write_atomic(run.path / EVAL_ROWS, "".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    return summary


def _summarise_rows(ev: EvalConfig, rows: list[EvalRow]) -> EvalSummary:
    summary = summarise(
        ev,
        {name: [r.scores_before[name] for r in rows] for name in rows[0].scores_before},
        {name: [r.scores_after[name] for r in rows] for name in rows[0].scores_after},
        ([r.before for r in rows], [r.after for r in rows]),
        np.asarray([r.kl for r in rows]),
        np.asarray([r.prompt_id for r in rows]),
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
    texts = [p.text for p in mine]
    scores_before = scorers.score(texts, before.texts)
    scores_after = scorers.score(texts, after.texts)
    _, ref_before, len_before = logprob_sums(policy, mine, before)
    pol_after, ref_after, len_after = logprob_sums(policy, mine, after)
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
