"""Advantage estimators: GAE with a value head, and the critic-free group and batch baselines.

A batch holds ``k`` responses per prompt, the k of one prompt consecutive (a *group*):
rows ``[0, k)`` share prompt 0, rows ``[k, 2k)`` prompt 1, and so on. Scores are (B,),
per-token tensors (B, T) with an explicit ``mask`` (1 = real response token), as in
``core.ppo``. Critic-free estimators give every token of a response the same advantage
(the score arrives at the last token and gamma = 1), except REINFORCE++, which keeps a
per-token KL term. No model objects, no config objects, no I/O in this file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from rewardtune.core import ppo
from rewardtune.core.tensors import masked_mean, masked_whiten, sequence_sum

AdvantageName = Literal["gae", "rloo", "grpo", "reinforce_pp"]  # ppo.advantage
KLIn = Literal["reward", "loss"]  # ppo.kl_in: where the KL term goes
ESTIMATORS = get_args(AdvantageName)
KL_IN = get_args(KLIn)


# --- the estimators ------------------------------------------------------------------


def groups(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) -> (B / k, k): one row per prompt's group of k consecutive responses."""
    if scores.shape[0] % k:
        raise ValueError(f"{scores.shape[0]} responses do not split into groups of {k}")
    return scores.reshape(-1, k)


def rloo_advantages(scores: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, "Back to Basics: Revisiting
    REINFORCE-Style Optimization for Learning from Human Feedback in LLMs"; Kool et al. 2019).

    ``A_i = r_i - 1/(k-1) * sum_{j != i} r_j`` within each group (k >= 2): every response is
    judged against the mean of the other responses to its prompt. scores: (B,) -> (B,).
    """
    if k < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    g = groups(scores, k)
    others = (g.sum(1, keepdim=True) - g) / (k - 1)
    return (g - others).reshape(-1)


def grpo_advantages(
    scores: torch.Tensor, k: int, scale: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Group-relative advantage (Shao et al. 2024, "DeepSeekMath", GRPO, outcome supervision).

    ``A_i = (r_i - mean(group)) / (std(group) + eps)`` with the sample (Bessel) std, as TRL
    and OpenRLHF compute it. ``scale=False`` is Dr. GRPO (Liu et al. 2025, "Understanding
    R1-Zero-Like Training: A Critical Perspective"): ``A_i = r_i - mean(group)``, without the
    std division that over-weights prompts whose responses all score alike. (B,) -> (B,).
    """
    g = groups(scores, k)
    centred = g - g.mean(1, keepdim=True)
    if scale:
        std = g.std(1, keepdim=True) if k > 1 else torch.zeros_like(centred)
        centred = centred / (std + eps)
    return centred.reshape(-1)


def discounted_returns(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = sum_{s >= t} gamma^(s-t) r_s`` over each right-padded response. (B, T) -> (B, T)."""
    mask = mask.to(rewards.dtype)
    rewards = rewards * mask
    returns = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = (rewards[:, t] + gamma * running) * mask[:, t]
        returns[:, t] = running
    return returns


def reinforce_pp_advantages(
    rewards: torch.Tensor, mask: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning
    Large Language Models"): the return ``G_t`` of the per-token rewards (the score at the
    last token, -beta * KL_t at every token), whitened over the whole batch: the batch mean is
    the baseline. rewards, mask: (B, T) -> ``(advantages, returns)``."""
    returns = discounted_returns(rewards, mask, gamma)
    return masked_whiten(returns, mask), returns


def kl_loss(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GRPO's KL term in the loss (Shao et al. 2024, eq. 4): the mean over real tokens of the
    k3 estimator ``pi_ref/pi - log(pi_ref/pi) - 1`` (unbiased, >= 0), differentiable in pi."""
    return masked_mean(ppo.kl_penalty(logprobs, ref_logprobs, "low_var"), mask)


# --- one call from step() ------------------------------------------------------------


@dataclass(frozen=True)
class Estimator:
    """How a step turns scores into advantages (``ppo.advantage`` and its companions)."""

    name: str = "gae"
    samples_per_prompt: int = 1
    kl_estimator: str = "kl"  # the per-token KL put in the reward (objective/kl_penalty)
    kl_in: str = "reward"  # "loss": k3 in the loss instead (GRPO)
    grpo_scale: bool = True
    gamma: float = 1.0
    lam: float = 0.95
    whiten_rewards: bool = False

    @property
    def uses_critic(self) -> bool:
        """Only GAE needs the value head; the others neither train nor save it."""
        return self.name == "gae"


@dataclass
class Advantages:
    """What the update needs, and what the stats report. Every tensor is (B, T)."""

    advantages: torch.Tensor
    returns: torch.Tensor  # the value head's target (GAE); the baselined quantity otherwise
    rewards: torch.Tensor  # per-token rewards: score at the last token + non_score
    non_score: torch.Tensor  # -beta * penalty_t (0 when the KL is in the loss)
    kl: torch.Tensor  # the sampled log-ratio k1, for objective/kl and the KL controller
    penalty: torch.Tensor  # the per-token KL estimate of ``kl_estimator`` in the reward


def compute_advantages(
    spec: Estimator,
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> Advantages:
    """scores (B,) + logprobs, ref_logprobs, values, mask (B, T) -> advantages and returns."""
    kl = ppo.kl_penalty(logprobs, ref_logprobs, "kl") * mask
    penalty = ppo.kl_penalty(logprobs, ref_logprobs, spec.kl_estimator) * mask
    beta = 0.0 if spec.kl_in == "loss" else kl_coef
    rewards, non_score = ppo.shape_rewards(scores, penalty, beta, mask)
    if spec.whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    if spec.name == "gae":
        advantages, returns = ppo.gae(values, rewards, mask, spec.gamma, spec.lam)
        advantages = masked_whiten(advantages, mask)
    elif spec.name == "reinforce_pp":
        advantages, returns = reinforce_pp_advantages(rewards, mask, spec.gamma)
    else:
        advantages, returns = _group_advantages(spec, sequence_sum(rewards, mask), mask)
    return Advantages(advantages, returns, rewards, non_score, kl, penalty)


def _group_advantages(
    spec: Estimator, sequence_rewards: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO or GRPO on each response's total reward (score - beta * sum KL), given to every
    one of its tokens."""
    k = spec.samples_per_prompt
    if spec.name == "rloo":
        per_response = rloo_advantages(sequence_rewards, k)
    elif spec.name == "grpo":
        per_response = grpo_advantages(sequence_rewards, k, spec.grpo_scale)
    else:
        raise ValueError(f"unknown advantage estimator {spec.name!r}; expected one of {ESTIMATORS}")
    mask = mask.to(sequence_rewards.dtype)
    return per_response[:, None] * mask, sequence_rewards[:, None] * mask
