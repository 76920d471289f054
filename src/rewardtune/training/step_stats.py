"""The fields of ``StepStats`` one step measures, each next to the quantity it describes;
means over every process, leaving out samples masked as non-finite."""

from __future__ import annotations

import torch

from rewardtune.core import ppo as core
from rewardtune.core.advantages import Advantages
from rewardtune.core.tensors import masked_mean, sequence_sum
from rewardtune.training.collective import global_mean
from rewardtune.training.timing import StepTimer
from rewardtune.types import Rollout


def objective_stats(
    accelerator, rollout: Rollout, estimate: Advantages, valid: torch.Tensor
) -> dict:
    """KL penalty, entropy, shaped score, returns and advantages, response length; the
    non-score reward as an extra."""
    mask = rollout.response_mask

    def mean(per_token: torch.Tensor) -> float:  # summed per sequence, then averaged
        return global_mean(accelerator, sequence_sum(per_token, mask), valid)

    non_score = mean(estimate.non_score)
    return {
        "kl_penalty": mean(estimate.penalty),
        "entropy": global_mean(accelerator, -sequence_sum(rollout.logprobs, mask), valid),
        "score_mean": mean(estimate.rewards),
        "returns_mean": float(masked_mean(estimate.returns, mask)),
        "advantages_mean": float(masked_mean(estimate.advantages, mask)),
        "response_length": global_mean(accelerator, mask.sum(1).float(), valid),
        "extra": {"objective/non_score_reward": non_score},
    }


def reward_stats(accelerator, raw_scores: torch.Tensor, valid: torch.Tensor) -> dict:
    """What the reward said (before scaling), over every process's samples that trained: a
    group masked for a non-finite score leaves out its finite members too, as every other
    stat does."""
    device = accelerator.device
    scores = accelerator.gather(raw_scores.float().contiguous().to(device))
    trained = accelerator.gather(valid.to(device=device, dtype=torch.uint8).contiguous())
    scores = scores[trained.bool()]
    return {
        "reward_mean": float(scores.mean()),
        "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
    }


def critic_stats(rollout: Rollout, returns: torch.Tensor) -> dict:
    """The value head's prediction and fit."""
    mask = rollout.response_mask
    return {
        "vpred": float(masked_mean(rollout.values, mask)),
        "explained_variance": core.explained_variance(rollout.values, returns, mask),
    }


def time_stats(timer: StepTimer, update_seconds: float, n_samples: int, length: float) -> dict:
    """Seconds per stage and throughput over the whole step (sampling, reward, update);
    ``length``: mean response tokens."""
    seconds = timer.get("rollout") + timer.get("reward") + update_seconds
    return {
        "time_rollout": timer.get("rollout"),
        "time_reward": timer.get("reward"),
        "time_update": update_seconds,
        "samples_per_s": n_samples / seconds,
        "tokens_per_s": length * n_samples / seconds,
    }
