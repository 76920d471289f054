"""The pieces the clipped surrogate of ``ppo.policy_loss`` is built from, and the loss options
of today's RL fine-tuning, each as published.

- The importance ratio (``ppo.importance_ratio``): PPO's per token; GSPO's per response,
  length-normalised (Zheng et al. 2025, "Group Sequence Policy Optimization",
  arXiv 2507.18071); TRL's RLOO's per response, unnormalised.
- Asymmetric clipping, clip-higher (Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement
  Learning System at Scale", arXiv 2503.14476, eq. 10).
- The loss aggregation (``ppo.loss_aggregation``), veRL's ``agg_loss`` modes
  (verl/trainer/ppo/core_algos.py), among them Dr. GRPO's constant normaliser (Liu et al.
  2025, "Understanding R1-Zero-Like Training: A Critical Perspective").
- Responses cut by the length limit (DAPO's overlong filtering, section 3.4).

Per-token tensors are (B, T) with an explicit ``mask`` (1 = a real response token). No model
objects, no config objects, no I/O in this file.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from rewardtune.core.tensors import masked_mean

ImportanceRatio = Literal["token", "sequence", "sequence_unnormalised"]  # ppo.importance_ratio
LossAggregation = Literal[  # ppo.loss_aggregation, veRL's names with underscores
    "token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"
]
IMPORTANCE_RATIOS = get_args(ImportanceRatio)
LOSS_AGGREGATIONS = get_args(LossAggregation)

# a response-level ratio is one number per response: its loss is the mean over responses
SEQUENCE_RATIO_AGGREGATION: LossAggregation = "seq_mean_token_mean"
LOG_RATIO_MAX = 10.0  # veRL's clamp of GSPO's log-ratio, keeps exp() finite


def resolve_aggregation(
    aggregation: str | None, advantage: str, grpo_scale: bool, ratio_level: str
) -> str:
    """``ppo.loss_aggregation``, where unset (None) the one its estimator is published with:
    the mean over responses for a response-level ratio (GSPO, TRL's RLOO), the constant
    normaliser for Dr. GRPO (``grpo`` without the std), else PPO's token mean."""
    if aggregation is not None:
        return aggregation
    if ratio_level != "token":
        return SEQUENCE_RATIO_AGGREGATION
    if advantage == "grpo" and not grpo_scale:
        return "seq_mean_token_sum_norm"
    return "token_mean"


def log_importance_ratio(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor, level: str
) -> torch.Tensor:
    """log r, (B, T), differentiable in ``logprobs``; a response-level ratio is broadcast to
    every token of its response.

    - ``token`` (PPO): ``log r_t = log pi(y_t) - log pi_old(y_t)``.
    - ``sequence`` (GSPO, eq. 7): ``log s_i = 1/|y_i| sum_t (log pi(y_t) - log pi_old(y_t))``,
      i.e. ``s_i = (pi(y_i) / pi_old(y_i)) ** (1/|y_i|)``. Its gradient is the paper's eq. 11:
      ``grad s_i = s_i * 1/|y_i| sum_t grad log pi(y_t)``, every token weighted alike.
    - ``sequence_unnormalised`` (TRL's RLOOTrainer ``_compute_loss``): ``log pi(y_i) - log
      pi_old(y_i)``, the sum over the response's tokens.
    """
    log_ratio = logprobs - old_logprobs
    if level == "token":
        return log_ratio
    mask = mask.to(log_ratio.dtype)
    summed = (log_ratio * mask).sum(-1, keepdim=True)
    if level == "sequence":
        summed = summed / mask.sum(-1, keepdim=True).clamp(min=1.0)
    elif level != "sequence_unnormalised":
        raise ValueError(f"unknown importance ratio {level!r}; expected one of {IMPORTANCE_RATIOS}")
    return torch.clamp(summed, max=LOG_RATIO_MAX).expand_as(log_ratio)


def clipped_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, clip_low: float, clip_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's pessimistic surrogate per token, ``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))``,
    with DAPO's decoupled range (eq. 10; veRL ``compute_policy_loss_vanilla``'s ``clip_ratio_low``
    / ``clip_ratio_high``): a larger ``eps_high`` lets unlikely tokens with A > 0 gain more
    probability. Returns ``(losses, clipped)``, both (B, T); ``clipped``: the clipped term bound."""
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def aggregate_loss(
    losses: torch.Tensor, mask: torch.Tensor, mode: str, normaliser: float | None = None
) -> torch.Tensor:
    """A (B, T) loss matrix to the scalar one optimizer step minimises (veRL ``agg_loss``).

    - ``token_mean``: sum over every real token / their number (PPO, DAPO eq. 12). A token of
      a long response weighs as much as one of a short response.
    - ``seq_mean_token_mean``: each response's token mean, then the mean over responses with a
      real token (GRPO as published, GSPO). Each token of response i weighs 1/|y_i|.
    - ``seq_mean_token_sum_norm``: the sum over every real token / ``normaliser``, a constant
      (Dr. GRPO; veRL's ``loss_scale_factor``): max response tokens x responses per minibatch,
      so that no token's weight depends on its response's length or its minibatch.
    """
    mask = mask.to(losses.dtype)
    if mode == "token_mean":
        return masked_mean(losses, mask)
    if mode == "seq_mean_token_mean":
        tokens = mask.sum(-1)
        per_response = (losses * mask).sum(-1) / tokens.clamp(min=1.0)
        return masked_mean(per_response, (tokens > 0).to(losses.dtype))
    if mode == "seq_mean_token_sum_norm":
        if normaliser is None or normaliser <= 0:
            raise ValueError("seq_mean_token_sum_norm needs a positive constant normaliser")
        return (losses * mask).sum() / normaliser
    raise ValueError(f"unknown loss aggregation {mode!r}; expected one of {LOSS_AGGREGATIONS}")


def constant_normaliser(max_response_tokens: int, responses_per_minibatch: int) -> float:
    """Dr. GRPO's constant: generation budget x responses in one process's minibatch, the same
    on every process and minibatch (DDP then averages the processes' gradients)."""
    return float(max_response_tokens * responses_per_minibatch)


def ends_without_stop(
    response_ids: torch.Tensor, mask: torch.Tensor, stop_ids: torch.Tensor
) -> torch.Tensor:
    """(B,) True where a response was cut by the length limit: its last real token is not one
    of ``stop_ids`` (EOS, end-of-turn). DAPO's overlong filtering masks these out of the loss
    (section 3.4), as a truncated response's reward says little about its text.

    response_ids, mask: (B, T) right-padded; stop_ids: (S,)."""
    lengths = mask.long().sum(-1)
    last = response_ids.gather(-1, (lengths - 1).clamp(min=0)[:, None]).squeeze(-1)
    stopped = torch.isin(last, stop_ids.to(last.device))
    return (lengths > 0) & ~stopped
