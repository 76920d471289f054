"""What the evaluation samples from: the trained policy of a run, responses drawn with
per-batch seeds, and their log-probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from rewardtune.config import Config, GenerationConfig, ModelConfig
from rewardtune.core.tensors import sequence_sum
from rewardtune.models import Policy, load_policy
from rewardtune.runs.checkpoints import EVAL_FILES, checkpoint_problem, load_trained_weights
from rewardtune.runs.rundir import FINAL, RunDir
from rewardtune.sampling import rollout as rollout_lib
from rewardtune.types import Prompt, RewardtuneError


@dataclass(frozen=True)
class Draw:
    """How responses are drawn: the recipe's sampling settings with eval's length, in
    batches of ``batch_size``, batch i seeded with ``seed + i``; ``chat``: the prompts are
    chat turns, so the chat end-of-turn tokens end a response too."""

    generation: GenerationConfig
    batch_size: int
    seed: int
    max_new_tokens: int
    chat: bool

    @classmethod
    def of(cls, cfg: Config, chat: bool) -> Draw:
        ev = cfg.eval
        gen = cfg.generation.model_copy(update={"response_tokens": None})
        return cls(gen, ev.batch_size, ev.seed, ev.max_new_tokens, chat)


@dataclass
class Samples:
    """Responses, and the log-probability of each token under the model that drew it (kept
    from the sampling forward passes, from the raw logits: a fresh forward gives the same)."""

    texts: list[str]
    ids: list[torch.Tensor]
    logprobs: list[torch.Tensor]

    def logprob_sums(self) -> np.ndarray:
        """Per response: sum log p of the model that drew it."""
        return np.array([float(lp.sum()) for lp in self.logprobs])

    def token_counts(self) -> np.ndarray:
        return np.array([float(len(lp)) for lp in self.logprobs])


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
    logprobs: list[torch.Tensor] = []
    sampler = rollout_lib.Sampler()
    for i in batches:
        torch.manual_seed(draw.seed + i)
        queries = [p.input_ids for p in prompts[i * size : (i + 1) * size]]
        drawn = rollout_lib.generate(
            lm,
            queries,
            draw.generation,
            pad,
            eos,
            None,
            policy.seq2seq,
            draw.max_new_tokens,
            value_head=policy.module.v_head,  # keeps each token's logprob from sampling
            sampler=sampler,
        )
        ids += drawn.responses
        logprobs += drawn.logprobs
    texts = policy.tokenizer.batch_decode(ids, skip_special_tokens=True)
    empty = [i for i, r in enumerate(ids) if not len(r)]  # scored as one pad token of logprob 0
    for i in empty:
        ids[i], logprobs[i] = torch.tensor([pad]), torch.zeros(1)
    return Samples(texts, ids, logprobs)


def reference_sums(policy: Policy, prompts: list[Prompt], samples: Samples) -> np.ndarray:
    """Per response: sum log pi_ref, from one forward pass of the reference."""
    queries = [p.input_ids for p in prompts]
    kept = rollout_lib.Generation(
        samples.ids, samples.logprobs, [torch.zeros(len(lp)) for lp in samples.logprobs]
    )
    scored = rollout_lib.score(
        policy.module,
        policy.reference,
        queries,
        samples.ids,
        policy.tokenizer.pad_token_id,
        16,
        kept,  # the policy's own logprobs are kept: only the reference runs
    )
    return sequence_sum(scored.ref_logprobs, scored.response_mask).cpu().numpy()


def load_trained(model: ModelConfig, run: RunDir, checkpoint: str | None, device) -> Policy:
    """The run's final/ policy, or that of ``checkpoints/<checkpoint>``."""
    folder = run.checkpoint_dir(checkpoint) if checkpoint else run.final_dir
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
