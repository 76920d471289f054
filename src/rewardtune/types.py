"""Typed records passed between stages. Stat names are defined here, once."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import ClassVar, TypeVar

import torch


class RewardtuneError(Exception):
    """A mistake the user can fix: the message says what, where and how to fix it.

    The CLI prints it as one line and exits with code 2; bugs stay tracebacks.
    """


@dataclass
class Prompt:
    """One prompt: its text (as the reward sees it), the policy's token ids for it, and the
    other fields of its data row (``data.columns``), which rewards may read."""

    text: str
    input_ids: torch.Tensor  # (query_len,) int64
    columns: dict = field(default_factory=dict)


@dataclass
class PromptBatch:
    """A batch of prompts, as the classic dataloader yields them."""

    query: list[str]
    input_ids: list[torch.Tensor]  # each (query_len_i,)
    columns: dict[str, list] = field(default_factory=dict)  # name -> one value per query

    def __getitem__(self, key: str):  # classic loops write batch["query"], batch["input_ids"]
        return getattr(self, key)

    def __len__(self) -> int:
        return len(self.query)


_Batch = TypeVar("_Batch", bound="TokenBatch")


@dataclass
class TokenBatch:
    """Queries left-padded and responses right-padded, with their masks; for an
    encoder-decoder policy the query is the encoder input and the response the decoder output.

    Subclasses name their per-token fields (each (B, R), aligned with the response) in
    ``PER_TOKEN``: ``trim`` cuts exactly those with the response, nothing is guessed by shape.
    """

    PER_TOKEN: ClassVar[tuple[str, ...]] = ()

    query_ids: torch.Tensor  # (B, Q) left-padded
    query_mask: torch.Tensor  # (B, Q) 1 = real token
    response_ids: torch.Tensor  # (B, R) right-padded
    response_mask: torch.Tensor  # (B, R) 1 = real response token (up to and incl. EOS)

    def __len__(self) -> int:
        return self.query_ids.shape[0]

    def inputs(self) -> dict[str, torch.Tensor]:
        """The four tensors a policy's forward takes, by name."""
        return {
            "query_ids": self.query_ids,
            "query_mask": self.query_mask,
            "response_ids": self.response_ids,
            "response_mask": self.response_mask,
        }

    def index(self: _Batch, idx: torch.Tensor | slice) -> _Batch:
        """The rows ``idx`` (a slice, or an index tensor moved to each field's device)."""
        rows = {}
        for f in fields(self):
            value = getattr(self, f.name)
            rows[f.name] = value[idx if isinstance(idx, slice) else idx.to(value.device)]
        return replace(self, **rows)

    def trim(self: _Batch) -> _Batch:
        """Drop query columns that are padding in every row (on the left) and response
        columns (on the right, in the response and every per-token field)."""
        q_keep = int(self.query_mask.sum(1).max())
        # at least one column: a minibatch may hold only samples masked out of the update
        r_keep = max(1, int(self.response_mask.sum(1).max()))
        width = self.query_ids.shape[1]
        cut = {key: getattr(self, key)[:, width - q_keep :] for key in ("query_ids", "query_mask")}
        for key in ("response_ids", "response_mask", *self.PER_TOKEN):
            cut[key] = getattr(self, key)[:, :r_keep]
        return replace(self, **cut)


@dataclass
class Rollout(TokenBatch):
    """Everything sampled and scored for one batch before the update."""

    PER_TOKEN: ClassVar[tuple[str, ...]] = ("logprobs", "ref_logprobs", "values")

    logprobs: torch.Tensor  # (B, R) log pi_old(response_t | ...)
    ref_logprobs: torch.Tensor  # (B, R) log pi_ref(response_t | ...)
    values: torch.Tensor  # (B, R) V(s_t) of the policy's value head


@dataclass
class Minibatch(TokenBatch):
    """What one optimizer step of the update reads: a rollout's rows with their advantages."""

    PER_TOKEN: ClassVar[tuple[str, ...]] = (
        "old_logprobs",
        "old_values",
        "ref_logprobs",
        "advantages",
        "returns",
    )

    old_logprobs: torch.Tensor  # (B, R) log pi_old, from the rollout
    old_values: torch.Tensor  # (B, R) V_old, from the rollout
    ref_logprobs: torch.Tensor  # (B, R)
    advantages: torch.Tensor  # (B, R)
    returns: torch.Tensor  # (B, R)

    @classmethod
    def from_rollout(
        cls, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor
    ) -> Minibatch:
        return cls(
            **rollout.inputs(),
            old_logprobs=rollout.logprobs,
            old_values=rollout.values,
            ref_logprobs=rollout.ref_logprobs,
            advantages=advantages,
            returns=returns,
        )


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
