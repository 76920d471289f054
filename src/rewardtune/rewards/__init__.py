"""Rewards: the protocol, the reward types (one module each, see ``registry``), and building
them from the config."""

from __future__ import annotations

from rewardtune.rewards.base import (
    Reward,
    Scores,
    WeightedReward,
    call_with_retries,
    check_scores,
)
from rewardtune.rewards.registry import RewardBase, ToxicityBase, describe_term

__all__ = [
    "Reward",
    "Scores",
    "WeightedReward",
    "build_reward",
    "build_scorer",
    "build_toxicity",
    "call_with_retries",
    "check_scores",
    "describe_term",
]


def build_scorer(spec: RewardBase, where: str) -> Reward:
    """One reward from its config section."""
    scorer = spec.scorer(where)
    if spec.name:
        scorer.name = spec.name
    return scorer


def build_reward(specs: list[RewardBase]) -> WeightedReward:
    """The recipe's total reward: the weighted sum of its ``reward:`` list."""
    terms = [(build_scorer(spec, f"reward.{i}"), spec.weight) for i, spec in enumerate(specs)]
    names = [r.name for r, _ in terms]
    for i, (reward, _) in enumerate(terms):  # keep per-term stat names distinct
        if names.count(reward.name) > 1:
            reward.name = f"{reward.name}#{i}"
    return WeightedReward(
        terms, [spec.retries for spec in specs], [spec.retry_backoff_s for spec in specs]
    )


def build_toxicity(spec: ToxicityBase) -> Reward:
    """P(toxic) in [0, 1] from an ``eval.toxicity`` section: a classifier's toxic class, or
    alt-profanity-check."""
    return spec.scorer("eval.toxicity")
