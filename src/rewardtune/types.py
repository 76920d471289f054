"""Typed records passed between stages. Stat names are defined here, once."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
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
        "loss_mask",
    )

    old_logprobs: torch.Tensor  # (B, R) log pi_old, from the rollout
    old_values: torch.Tensor  # (B, R) V_old, from the rollout
    ref_logprobs: torch.Tensor  # (B, R)
    advantages: torch.Tensor  # (B, R)
    returns: torch.Tensor  # (B, R)
    # (B, R) the tokens of the policy loss: response_mask, less the responses that
    # ppo.mask_truncated leaves out
    loss_mask: torch.Tensor

    @classmethod
    def from_rollout(
        cls,
        rollout: Rollout,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        loss_mask: torch.Tensor | None = None,
    ) -> Minibatch:
        return cls(
            **rollout.inputs(),
            old_logprobs=rollout.logprobs,
            old_values=rollout.values,
            ref_logprobs=rollout.ref_logprobs,
            advantages=advantages,
            returns=returns,
            loss_mask=rollout.response_mask if loss_mask is None else loss_mask,
        )


# --- what one step measured ---------------------------------------------------------
#
# Each field carries the key it is logged under (classic TRL's names, what users plot) in its
# metadata: that is the one place a key is written. Readers use ``STAT.<field>``.


def stat(key: str, default=0.0):
    """A ``StepStats`` field logged as ``key``; ``None`` values are left out of the log."""
    return field(default=default, metadata={"key": key})


@dataclass
class ObjectiveStats:
    """What the step optimised: the reward, the KL to the reference and the shaped score."""

    kl: float = stat("objective/kl")  # summed k1 (log pi - log pi_ref): what target_kl is on
    kl_penalty: float = stat("objective/kl_penalty")  # summed ppo.kl_estimator: shapes the reward
    kl_coef: float = stat("objective/kl_coef")
    entropy: float = stat("objective/entropy")
    reward_mean: float = stat("env/reward_mean")
    reward_std: float = stat("env/reward_std")
    score_mean: float = stat("env/score_mean")
    returns_mean: float = stat("ppo/returns/mean")
    advantages_mean: float = stat("ppo/policy/advantages_mean")
    response_length: float = stat("tokens/response_len_mean")
    skipped_nonfinite: int = stat("env/skipped_nonfinite", 0)
    non_score_reward: float = stat("objective/non_score_reward")
    # ppo.mask_truncated only: the share of responses the length limit cut, with no policy loss
    truncated_masked: float | None = stat("ppo/policy/truncated_masked", None)


@dataclass
class UpdateStats:
    """The minibatch epochs: means over every minibatch of every process."""

    policy_loss: float = stat("ppo/loss/policy")
    value_loss: float | None = stat("ppo/loss/value", None)  # only with a value head
    kl_loss: float | None = stat("ppo/loss/kl", None)  # only with ppo.kl_in: loss
    total_loss: float = stat("ppo/loss/total")
    clipfrac: float = stat("ppo/policy/clipfrac")
    approxkl: float = stat("ppo/policy/approxkl")
    value_clipfrac: float | None = stat("ppo/val/clipfrac", None)
    grad_norm: float = stat("ppo/grad_norm")
    early_stopped: float = stat("ppo/early_stopped")
    skipped_minibatches: int = stat("ppo/skipped_minibatches", 0)


@dataclass
class CriticStats:
    """The value head's prediction and fit (estimators with a critic only)."""

    vpred: float = stat("ppo/val/vpred")
    explained_variance: float = stat("ppo/val/var_explained")


@dataclass
class TimingStats:
    """Seconds per stage and throughput over the whole step (sampling, reward, update)."""

    time_rollout: float = stat("time/rollout")
    time_reward: float = stat("time/reward")
    time_update: float = stat("time/update")
    samples_per_s: float = stat("throughput/samples_per_s")
    tokens_per_s: float = stat("throughput/tokens_per_s")


@dataclass
class GroupFilterStats:
    """What ``ppo.filter_groups`` (DAPO's dynamic sampling) did in one step."""

    # share of the groups drawn (every draw, every process) whose scores all tied
    filtered_groups: float = stat("env/filtered_groups")
    batch_fill: float = stat("env/batch_fill")  # groups trained / groups a step asks for
    resample_rounds: int = stat("env/resample_rounds", 0)  # extra draws this step
    time_resample: float = stat("time/resample")  # seconds of the extra draws and their rewards


REWARD_TERM = "env/reward/"  # + a term's name: the mean of one term of a reward with several

STAT_PARTS = (ObjectiveStats, UpdateStats, CriticStats, TimingStats, GroupFilterStats)


class _Keys:
    """``STAT.reward_mean == "env/reward_mean"``: every logged key by its field name."""

    def __init__(self, parts: tuple[type, ...]):
        for part in parts:
            for f in fields(part):
                setattr(self, f.name, f.metadata["key"])


STAT = _Keys(STAT_PARTS)


def _logged(part) -> dict[str, float]:
    return {
        f.metadata["key"]: getattr(part, f.name)
        for f in fields(part)
        if getattr(part, f.name) is not None
    }


@dataclass
class StepStats:
    """What one PPO step measured, by stage; ``to_dict`` gives the logged keys."""

    objective: ObjectiveStats
    update: UpdateStats
    critic: CriticStats | None  # None without a value head (critic-free estimators)
    timing: TimingStats
    reward_terms: dict[str, float] = field(default_factory=dict)  # term name -> mean score
    group_filter: GroupFilterStats | None = None  # only with ppo.filter_groups, in train()

    def to_dict(self) -> dict[str, float]:
        """The flat dict metrics.jsonl, the trackers and the classic ``step()`` return."""
        flat: dict[str, float] = {}
        for part in (self.objective, self.update, self.critic, self.timing, self.group_filter):
            if part is not None:
                flat |= _logged(part)
        return flat | {REWARD_TERM + name: value for name, value in self.reward_terms.items()}
