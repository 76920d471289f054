"""Typed records passed between stages. Stat names are defined here, once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


class RewardtuneError(Exception):
    """A mistake the user can fix: the message says what, where and how to fix it.

    The CLI prints it as one line and exits with code 2; bugs stay tracebacks.
    """


@dataclass
class Prompt:
    """One prompt: its text (as the reward sees it) and the policy's token ids for it."""

    text: str
    input_ids: torch.Tensor  # (query_len,) int64


@dataclass
class PromptBatch:
    """A batch of prompts, as the classic dataloader yields them."""

    query: list[str]
    input_ids: list[torch.Tensor]  # each (query_len_i,)

    def __getitem__(self, key: str):  # classic loops write batch["query"], batch["input_ids"]
        return getattr(self, key)

    def __len__(self) -> int:
        return len(self.query)


@dataclass
class Rollout:
    """Everything sampled and scored for one batch before the update.

    Queries are left-padded, responses right-padded; for an encoder-decoder policy the
    query is the encoder input and the response the decoder output.
    """

    query_ids: torch.Tensor  # (B, Q) left-padded
    query_mask: torch.Tensor  # (B, Q) 1 = real token
    response_ids: torch.Tensor  # (B, R) right-padded
    response_mask: torch.Tensor  # (B, R) 1 = real response token (up to and incl. EOS)
    logprobs: torch.Tensor  # (B, R) log pi_old(response_t | ...)
    ref_logprobs: torch.Tensor  # (B, R) log pi_ref(response_t | ...)
    values: torch.Tensor  # (B, R) V(s_t) of the policy's value head

    def __len__(self) -> int:
        return self.query_ids.shape[0]


# The stats users already plot, named as classic TRL named them.
STAT_NAMES = {
    "kl": "objective/kl",  # summed k1 (log pi - log pi_ref), what target_kl is defined on
    "kl_penalty": "objective/kl_penalty",  # summed ppo.kl_estimator, what the reward is shaped by
    "kl_coef": "objective/kl_coef",
    "entropy": "objective/entropy",
    "reward_mean": "env/reward_mean",
    "reward_std": "env/reward_std",
    "score_mean": "env/score_mean",
    "returns_mean": "ppo/returns/mean",
    "advantages_mean": "ppo/policy/advantages_mean",
    "policy_loss": "ppo/loss/policy",
    "value_loss": "ppo/loss/value",
    "kl_loss": "ppo/loss/kl",
    "total_loss": "ppo/loss/total",
    "clipfrac": "ppo/policy/clipfrac",
    "approxkl": "ppo/policy/approxkl",
    "value_clipfrac": "ppo/val/clipfrac",
    "vpred": "ppo/val/vpred",
    "explained_variance": "ppo/val/var_explained",
    "grad_norm": "ppo/grad_norm",
    "early_stopped": "ppo/early_stopped",
    "skipped_minibatches": "ppo/skipped_minibatches",
    "response_length": "tokens/response_len_mean",
    "skipped_nonfinite": "env/skipped_nonfinite",
    "time_rollout": "time/rollout",
    "time_reward": "time/reward",
    "time_update": "time/update",
    "samples_per_s": "throughput/samples_per_s",
    "tokens_per_s": "throughput/tokens_per_s",
}


@dataclass
class StepStats:
    """What one PPO step measured; ``to_dict`` gives the names of ARCHITECTURE.md."""

    kl: float = 0.0
    kl_penalty: float = 0.0
    kl_coef: float = 0.0
    entropy: float = 0.0
    reward_mean: float = 0.0
    reward_std: float = 0.0
    score_mean: float = 0.0
    returns_mean: float = 0.0
    advantages_mean: float = 0.0
    policy_loss: float = 0.0
    value_loss: float | None = None  # None (left out) without a value head
    kl_loss: float | None = None  # None unless the KL is in the loss (ppo.kl_in: loss)
    total_loss: float = 0.0
    clipfrac: float = 0.0
    approxkl: float = 0.0
    value_clipfrac: float | None = None
    vpred: float | None = None
    explained_variance: float | None = None
    grad_norm: float = 0.0
    early_stopped: float = 0.0
    skipped_minibatches: int = 0
    response_length: float = 0.0
    skipped_nonfinite: int = 0
    time_rollout: float = 0.0
    time_reward: float = 0.0
    time_update: float = 0.0
    samples_per_s: float = 0.0
    tokens_per_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)  # per-term rewards, etc.

    def to_dict(self) -> dict[str, float]:
        values = asdict(self)
        extra = values.pop("extra")
        return {
            STAT_NAMES[key]: value for key, value in values.items() if value is not None
        } | extra


@dataclass
class EvalRow:
    """One held-out prompt scored before and after training."""

    prompt: str
    before: str
    after: str
    scores_before: dict[str, float]
    scores_after: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)
