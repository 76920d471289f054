"""The PPO math of one step, as pure tensor functions.

Notation (Schulman et al. 2017; Ziegler et al. 2019, "Fine-Tuning Language Models from
Human Preferences"): a response of T tokens is an episode; pi is the policy being trained,
pi_ref the frozen reference, V the value head. Every per-token tensor is
(batch, response_len) with an explicit ``mask`` (1 = a real response token, 0 = padding
or anything after EOS). No model objects, no config objects, no I/O in this file.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch

from rewardtune.core.tensors import masked_mean, masked_var

KLEstimator = Literal["kl", "abs", "mse", "low_var"]  # ppo.kl_estimator
KL_ESTIMATORS = get_args(KLEstimator)


# --- KL: estimators and controllers --------------------------------------------------


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi (Schulman, "Approximating KL").

    With ``log_ratio = log pi - log pi_ref``:
    ``kl`` (k1) = log_ratio; ``abs`` = |log_ratio|; ``mse`` = 0.5 * log_ratio**2;
    ``low_var`` (k3) = exp(-log_ratio) - 1 + log_ratio, unbiased and always >= 0.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "kl":
        return log_ratio
    if estimator == "abs":
        return log_ratio.abs()
    if estimator == "mse":
        return 0.5 * log_ratio.square()
    if estimator == "low_var":
        # clamp keeps exp() finite when the policy has drifted far on one token
        neg = torch.clamp(-log_ratio, min=-20.0, max=20.0)
        return torch.clamp(torch.exp(neg) - 1.0 - neg, min=-10.0, max=10.0)
    raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")


def adaptive_kl_update(
    kl_coef: float, current_kl: float, target_kl: float, n_steps: int, horizon: int
) -> float:
    """Ziegler et al. (2019) eq. 2: beta <- beta * (1 + K_beta * e_t * n / horizon).

    ``e_t = clip(KL_t / KL_target - 1, -0.2, 0.2)`` is the proportional error; ``n_steps``
    is the number of samples seen since the last update.
    """
    error = min(max(current_kl / target_kl - 1.0, -0.2), 0.2)
    return kl_coef * (1.0 + error * n_steps / horizon)


# --- rewards and advantages ----------------------------------------------------------


def scale_scores(scores: torch.Tensor, scale: float, clip: float | None) -> torch.Tensor:
    """Multiply the sequence-level scores by ``scale`` then clip them to [-clip, clip]."""
    scores = scores * scale
    if clip is not None:
        scores = torch.clamp(scores, -clip, clip)
    return scores


def shape_rewards(
    scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards r_t = -beta * KL_t, plus the score at the last response token.

    scores: (B,); kl, mask: (B, T). Returns ``(rewards, non_score_rewards)``, both (B, T),
    zero where ``mask`` is 0.
    """
    mask = mask.to(kl.dtype)
    non_score = -kl_coef * kl * mask
    last = (mask.sum(1).long() - 1).clamp(min=0)  # responses are right-padded
    rewards = non_score.clone()
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards, non_score


def gae(
    values: torch.Tensor, rewards: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over right-padded episodes.

    values, rewards, mask: (B, T). ``delta_t = r_t + gamma V_{t+1} - V_t`` and
    ``A_t = delta_t + gamma lam A_{t+1}``, with V = 0 after the last real token (episodes end
    at EOS or the length limit). Returns ``(advantages, returns = advantages + values)``,
    zero where ``mask`` is 0.
    """
    mask = mask.to(values.dtype)
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    length = values.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


# --- losses --------------------------------------------------------------------------


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate: mean of max(-A r, -A clip(r, 1-eps, 1+eps)), r = pi / pi_old.

    Returns ``(loss, clipfrac, approxkl)``: the fraction of tokens where clipping bound,
    and 0.5 * E[(log pi - log pi_old)^2], the usual early-stopping signal.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approxkl = 0.5 * masked_mean(log_ratio.square(), mask)
    return loss, clipfrac, approxkl


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 0.5 * E[max((V - R)^2, (clip(V, V_old +- eps) - R)^2)].

    Returns ``(loss, clipfrac)``.
    """
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss = (values - returns).square()
    clipped_loss = (clipped - returns).square()
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return loss, clipfrac


# --- guards of the update (classic TRL's early stopping and ratio threshold) -------------

EARLY_STOP_FACTOR = 1.5  # classic TRL stops once the KL exceeds its target by over 50%


def should_stop_early(approxkl: float, target_kl_early: float) -> bool:
    """Stop the update's epoch loop: the minibatch's approxkl exceeds 1.5 x ``target_kl_early``."""
    return approxkl > EARLY_STOP_FACTOR * target_kl_early


def mean_ratio(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """E[pi / pi_old] over the real tokens of a minibatch (1 before the weights move)."""
    return masked_mean(torch.exp(logprobs - old_logprobs), mask)


def should_skip_minibatch(mean_ratio: float, ratio_threshold: float | None) -> bool:
    """Classic TRL's guard: a minibatch whose mean ratio exceeds the threshold takes no step
    (``None``: never skip)."""
    return ratio_threshold is not None and mean_ratio > ratio_threshold


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[R - V] / Var[R] over masked positions (1 = perfect critic, <= 0 = useless)."""
    var_returns = masked_var(returns, mask)
    if var_returns.item() == 0:
        return float("nan")
    return 1.0 - (masked_var(returns - values, mask) / var_returns).item()
