"""What the evaluation samples from and on: the held-out (or given) prompts, the trained
policy of a run, responses drawn with per-batch seeds, and their log-probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rewardtune.config import Config, DataConfig, EvalConfig, GenerationConfig, ModelConfig
from rewardtune.core.tensors import sequence_sum
from rewardtune.data.prompts import (
    fit_prompts,
    format_prompts,
    load_prompts,
    read_rows,
    tokenize_prompt,
)
from rewardtune.models import Policy, load_policy
from rewardtune.runs.checkpoint import EVAL_FILES, checkpoint_problem, load_trained_weights
from rewardtune.runs.rundir import FINAL, RunDir
from rewardtune.sampling import rollout as rollout_lib
from rewardtune.types import Prompt, RewardtuneError


@dataclass(frozen=True)
class Draw:
    """How responses are drawn: the recipe's sampling settings with eval's length, in
    batches of ``batch_size``, batch i seeded with ``seed + i``."""

    generation: GenerationConfig
    batch_size: int
    seed: int
    max_new_tokens: int
    chat: bool

    @classmethod
    def of(cls, cfg: Config) -> Draw:
        ev = cfg.eval
        gen = cfg.generation.model_copy(update={"response_tokens": None})
        return cls(gen, ev.batch_size, ev.seed, ev.max_new_tokens, cfg.data.chat)


@dataclass
class Samples:
    texts: list[str]
    ids: list[torch.Tensor]


def sample(
    policy: Policy, lm, prompts: list[Prompt], draw: Draw, batches: list[int] | None = None
) -> Samples:
    """Responses for the prompts of ``batches`` (default: all), in order. Batch i (prompts
    ``i*batch_size`` onwards) is seeded with ``seed + i`` whichever process samples it, so
    both sides, and any number of processes, draw the same responses."""
    size = draw.batch_size
    eos = policy.eos_token_ids(draw.chat)
    pad = policy.tokenizer.pad_token_id
    if batches is None:
        batches = list(range(math.ceil(len(prompts) / size)))
    ids: list[torch.Tensor] = []
    sampler = rollout_lib.Sampler()
    for i in batches:
        torch.manual_seed(draw.seed + i)
        queries = [p.input_ids for p in prompts[i * size : (i + 1) * size]]
        ids += rollout_lib.generate(
            lm,
            queries,
            draw.generation,
            pad,
            eos,
            None,
            policy.seq2seq,
            draw.max_new_tokens,
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


def eval_prompts(
    data: DataConfig, ev: EvalConfig, policy: Policy, n: int, prompt_file: Path | None
) -> list[Prompt]:
    """The first ``n`` held-out prompts of the run, or of ``prompt_file``."""
    tokenizer, budget = policy.tokenizer, policy.prompt_budget(ev.max_new_tokens)
    if prompt_file is None:
        prompts = load_prompts(data, tokenizer, max_tokens=budget)[1]
        if not prompts:
            raise RewardtuneError(
                "this run has no held-out prompts (data.eval_fraction is 0); pass --prompt-file"
            )
        return prompts[:n]
    given = data.model_copy(
        update={
            "source": str(prompt_file),
            "template": "{text}",
            "column": "text",
            "min_chars": 0,
            "max_chars": None,
        }
    )
    rows = read_rows(given)
    if not rows:
        raise RewardtuneError(f"--prompt-file {prompt_file} has no prompts")
    texts = format_prompts(rows[:n], given)
    prompts = [tokenize_prompt(text, tokenizer, data.chat, None) for text in texts]
    return fit_prompts(prompts, tokenizer, data.chat, given, budget)


def load_trained(model: ModelConfig, run: RunDir, checkpoint: str | None, device) -> Policy:
    """The run's final/ policy, or that of ``checkpoints/<checkpoint>``."""
    folder = run.checkpoint(checkpoint) if checkpoint else run.final_dir
    if not folder.is_dir():
        raise RewardtuneError(
            f"{run.path} has no {FINAL}/ yet; train it first or pass --checkpoint step-N"
        )
    problem = checkpoint_problem(folder, EVAL_FILES) if checkpoint else None
    if problem:
        raise RewardtuneError(f"checkpoint {folder} {problem}; evaluate another --checkpoint")
    policy = load_policy(model, device)
    load_trained_weights(policy, folder)
    return policy
