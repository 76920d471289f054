"""Rewards whose models ship inside packages: alt-profanity-check and VADER."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from rewardtune.rewards.base import join
from rewardtune.rewards.registry import Input, RewardBase, ToxicityBase, reward_type, toxicity_type
from rewardtune.types import RewardtuneError


@reward_type
class ProfanitySpec(RewardBase):
    type: Literal["profanity"]
    higher_is_better: ClassVar = True  # 1 - P(offensive), or its logit
    input: Input = "prompt+response"
    output: Literal["prob", "logit"] = "prob"

    summary: ClassVar = ("output",)

    def scorer(self, where: str) -> ProfanityReward:
        return ProfanityReward(self.output, self.input)


@reward_type
class VaderSpec(RewardBase):
    type: Literal["vader"]
    higher_is_better: ClassVar = True
    input: Input = "prompt+response"

    def scorer(self, where: str) -> VaderReward:
        return VaderReward(self.input)


@toxicity_type
class ProfanityToxicitySpec(ToxicityBase):
    """P(offensive) under alt-profanity-check's linear model."""

    type: Literal["profanity"]
    input: Input = "response"

    def scorer(self, where: str) -> ProfanityToxicity:
        return ProfanityToxicity(self.input)


def _profanity_module():
    try:
        import profanity_check
    except ImportError as err:
        raise RewardtuneError(
            "the profanity reward needs alt-profanity-check: pip install 'rewardtune[lexicon]'"
        ) from err
    return profanity_check


def profanity_probability(texts: list[str]) -> list[float]:
    """P(offensive) per text under alt-profanity-check's linear model (toxicity in [0, 1])."""
    if not texts:
        return []
    return [float(p) for p in _profanity_module().predict_prob(texts)]


class ProfanityReward:
    """Higher for clean text: ``prob`` = 1 - P(offensive), ``logit`` = log((1 - p) / p)."""

    def __init__(self, output: str = "prob", input: str = "prompt+response"):
        _profanity_module()
        self.output, self.input = output, input
        self.name = "profanity"

    def __call__(
        self, prompts: list[str], responses: list[str], columns: dict | None = None
    ) -> list[float]:
        probs = profanity_probability(join(prompts, responses, self.input, columns))
        if self.output == "prob":
            return [1.0 - p for p in probs]
        eps = 1e-6
        return [math.log(max(1 - p, eps)) - math.log(max(p, eps)) for p in probs]


class ProfanityToxicity:
    """P(offensive), the toxicity metric of the offline recipes."""

    def __init__(self, input: str = "response"):
        _profanity_module()
        self.input = input
        self.name = "profanity"

    def __call__(
        self, prompts: list[str], responses: list[str], columns: dict | None = None
    ) -> list[float]:
        return profanity_probability(join(prompts, responses, self.input, columns))


class VaderReward:
    """VADER's compound sentiment score in [-1, 1] (positive is higher)."""

    def __init__(self, input: str = "prompt+response"):
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as err:
            raise RewardtuneError(
                "the vader reward needs vaderSentiment: pip install 'rewardtune[lexicon]'"
            ) from err
        self.analyzer = SentimentIntensityAnalyzer()
        self.input = input
        self.name = "vader"

    def __call__(
        self, prompts: list[str], responses: list[str], columns: dict | None = None
    ) -> list[float]:
        texts = join(prompts, responses, self.input, columns)
        return [float(self.analyzer.polarity_scores(t)["compound"]) for t in texts]
