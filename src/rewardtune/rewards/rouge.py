"""``rouge``: ROUGE F1 of the response against the row's reference (e.g. a reference summary),
with Google's ``rouge-score`` package (the implementation the summarisation papers report)."""

from __future__ import annotations

from typing import ClassVar, Literal

from rewardtune.rewards.match import column_values
from rewardtune.rewards.registry import RewardBase, reward_type
from rewardtune.types import RewardtuneError


@reward_type
class RougeSpec(RewardBase):
    type: Literal["rouge"]
    higher_is_better: ClassVar = True
    column: str = "summary"  # the reference text (or a list of them: the best counts)
    variant: Literal["rougeL", "rouge1", "rouge2"] = "rougeL"
    stemmer: bool = True  # Porter stemming, as the summarisation papers report it

    summary: ClassVar = ("column", "variant")

    def needs_columns(self) -> set[str]:
        return {self.column}

    def scorer(self, where: str) -> RougeReward:
        return RougeReward(self.column, self.variant, self.stemmer, where)


class RougeReward:
    """F1 in [0, 1] of ``variant`` between each response and its reference."""

    def __init__(
        self,
        column: str = "summary",
        variant: str = "rougeL",
        stemmer: bool = True,
        where: str = "reward",
    ):
        try:
            from rouge_score import rouge_scorer
        except ImportError as err:
            raise RewardtuneError(
                f"{where} (rouge) needs rouge-score: pip install 'rewardtune[text]'"
            ) from err
        self.scorer = rouge_scorer.RougeScorer([variant], use_stemmer=stemmer)
        self.column, self.variant, self.where = column, variant, where
        self.name = variant if variant != "rougeL" else "rouge"

    def __call__(
        self, prompts: list[str], responses: list[str], columns: dict | None = None
    ) -> list[float]:
        references = column_values(columns, self.column, self.where, "rouge", len(responses))
        return [self._f1(r, ref) for r, ref in zip(responses, references, strict=True)]

    def _f1(self, response: str, reference) -> float:
        refs = reference if isinstance(reference, list | tuple) else [reference]
        return max(self.scorer.score(str(ref), response)[self.variant].fmeasure for ref in refs)
