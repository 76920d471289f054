"""Rewards: the protocol, its implementations, and building them from the config."""

from __future__ import annotations

from rewardtune.config import ClassifierReward as ClassifierSpec
from rewardtune.config import HttpReward as HttpSpec
from rewardtune.config import ProfanityReward as ProfanitySpec
from rewardtune.config import PythonReward as PythonSpec
from rewardtune.config import VaderReward as VaderSpec
from rewardtune.rewards.base import (
    Reward,
    WeightedReward,
    call_with_retries,
    check_scores,
)
from rewardtune.rewards.classifier import ClassifierScorer
from rewardtune.rewards.http import HttpReward
from rewardtune.rewards.lexicon import ProfanityReward, ProfanityToxicity, VaderReward
from rewardtune.rewards.python import PythonReward

__all__ = [
    "Reward",
    "WeightedReward",
    "build_reward",
    "build_scorer",
    "build_toxicity",
    "call_with_retries",
    "check_scores",
]


def build_scorer(spec, where: str) -> Reward:
    """One reward from its config section."""
    if isinstance(spec, ClassifierSpec):
        scorer = ClassifierScorer.from_spec(spec, where)
    elif isinstance(spec, ProfanitySpec):
        scorer = ProfanityReward(spec.output, spec.input)
    elif isinstance(spec, VaderSpec):
        scorer = VaderReward(spec.input)
    elif isinstance(spec, PythonSpec):
        scorer = PythonReward(spec.function, spec.input, where, spec.call)
    elif isinstance(spec, HttpSpec):
        scorer = HttpReward(spec.url, spec.timeout_s, headers=spec.headers, where=where)
    else:  # pragma: no cover - config validation rules this out
        raise TypeError(f"unknown reward spec {spec!r}")
    if spec.name:
        scorer.name = spec.name
    return scorer


def build_reward(specs: list) -> WeightedReward:
    """The recipe's total reward: the weighted sum of its ``reward:`` list."""
    terms = [(build_scorer(spec, f"reward.{i}"), spec.weight) for i, spec in enumerate(specs)]
    names = [r.name for r, _ in terms]
    for i, (reward, _) in enumerate(terms):  # keep per-term stat names distinct
        if names.count(reward.name) > 1:
            reward.name = f"{reward.name}#{i}"
    return WeightedReward(
        terms, [spec.retries for spec in specs], [spec.retry_backoff_s for spec in specs]
    )


def build_toxicity(spec) -> Reward:
    """P(toxic) in [0, 1]: a classifier's toxic class, or alt-profanity-check."""
    if spec.type == "profanity":
        return ProfanityToxicity(spec.input)
    return ClassifierScorer.from_spec(spec, "eval.toxicity", output="prob")
