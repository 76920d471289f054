"""The parts of ``StepStats`` one step measures, each next to the quantity it describes;
means over every process, leaving out samples masked as non-finite."""

from __future__ import annotations

import torch

from rewardtune.core.advantages import Advantages
from rewardtune.core.ppo import explained_variance
from rewardtune.core.tensors import masked_mean, sequence_sum
from rewardtune.distributed import global_mean
from rewardtune.types import CriticStats, ObjectiveStats, Rollout, TimingStats


def objective_stats(
    accelerator,
    rollout: Rollout,
    estimate: Advantages,
    valid: torch.Tensor,
    raw_scores: torch.Tensor,
    kl: float,
    kl_coef: float,
    skipped: int,
) -> ObjectiveStats:
    """The reward (before scaling), the KL and its penalty, entropy, shaped score, returns and
    advantages, response length."""
    mask = rollout.response_mask

    def mean(per_token: torch.Tensor) -> float:  # summed per sequence, then averaged
        return global_mean(accelerator, sequence_sum(per_token, mask), valid)

    non_score = mean(estimate.non_score)
    return ObjectiveStats(
        kl=kl,
        kl_penalty=mean(estimate.penalty),
        kl_coef=kl_coef,
        entropy=global_mean(accelerator, -sequence_sum(rollout.logprobs, mask), valid),
        **reward_moments(accelerator, raw_scores),
        score_mean=mean(estimate.rewards),
        returns_mean=float(masked_mean(estimate.returns, mask)),
        advantages_mean=float(masked_mean(estimate.advantages, mask)),
        response_length=global_mean(accelerator, mask.sum(1).float(), valid),
        skipped_nonfinite=skipped,
        non_score_reward=non_score,
    )


def reward_moments(accelerator, raw_scores: torch.Tensor) -> dict[str, float]:
    """What the reward said (before scaling), over every process's finite scores."""
    scores = accelerator.gather(raw_scores.float().contiguous().to(accelerator.device))
    scores = scores[torch.isfinite(scores)]
    return {
        "reward_mean": float(scores.mean()),
        "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
    }


def critic_stats(rollout: Rollout, returns: torch.Tensor) -> CriticStats:
    """The value head's prediction and fit."""
    mask = rollout.response_mask
    return CriticStats(
        vpred=float(masked_mean(rollout.values, mask)),
        explained_variance=explained_variance(rollout.values, returns, mask),
    )


def timing_stats(
    rollout_s: float, reward_s: float, update_s: float, n_samples: int, length: float
) -> TimingStats:
    """Seconds per stage and throughput over the whole step (sampling, reward, update);
    ``length``: mean response tokens."""
    seconds = rollout_s + reward_s + update_s
    return TimingStats(
        time_rollout=rollout_s,
        time_reward=reward_s,
        time_update=update_s,
        samples_per_s=n_samples / seconds,
        tokens_per_s=length * n_samples / seconds,
    )
