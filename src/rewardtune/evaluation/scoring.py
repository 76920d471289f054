"""The evaluation's scorers, built once per evaluation and used on both sides: the
recipe's reward (total and, with several terms, each term), the toxicity scorer and the
extra scorers of ``eval``."""

from __future__ import annotations

from dataclasses import dataclass

from rewardtune.config import EvalConfig
from rewardtune.evaluation.metrics import REWARD_TOTAL, TOXICITY
from rewardtune.rewards import (
    WeightedReward,
    build_reward,
    build_scorer,
    build_toxicity,
    call_with_retries,
)
from rewardtune.rewards.base import Reward


@dataclass
class Scorers:
    reward: WeightedReward
    toxicity: Reward | None
    extras: list[tuple[Reward, object]]  # (scorer, its spec: retries and backoff)

    @classmethod
    def build(cls, reward_specs: list, ev: EvalConfig) -> Scorers:
        toxicity = build_toxicity(ev.toxicity) if ev.toxicity is not None else None
        extras = [
            (build_scorer(spec, f"eval.extra_scorers.{i}"), spec)
            for i, spec in enumerate(ev.extra_scorers)
        ]
        names = [scorer.name for scorer, _ in extras]
        for i, (scorer, _) in enumerate(extras):  # two checks of one type keep both columns
            if names.count(scorer.name) > 1:
                scorer.name = f"{scorer.name}#{i}"
        return cls(build_reward(reward_specs), toxicity, extras)

    @property
    def directions(self) -> dict[str, bool | None]:
        """Whether a rise is good, for each extra scorer's column (its type says)."""
        return {f"extra/{scorer.name}": spec.higher_is_better for scorer, spec in self.extras}

    def score(
        self, prompts: list[str], responses: list[str], columns: dict | None = None
    ) -> dict[str, list[float]]:
        """Every reward term and the total, the toxicity, and the extra scorers, by name;
        ``columns``: each response's data row (name -> one value per response)."""
        reward = self.reward.score(prompts, responses, columns)
        scores = {REWARD_TOTAL: reward.total}
        if len(self.reward.terms) > 1:
            scores |= {f"reward/{name}": v for name, v in reward.terms.items()}
        if self.toxicity is not None:
            scores[TOXICITY] = call_with_retries(self.toxicity, prompts, responses, 0, 0, columns)
        for scorer, spec in self.extras:
            scores[f"extra/{scorer.name}"] = call_with_retries(
                scorer, prompts, responses, spec.retries, spec.retry_backoff_s, columns
            )
        return scores
