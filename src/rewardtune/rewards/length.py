"""``length``: a target range of words or tokens, with a linear penalty outside it.

DAPO's soft overlong punishment (Yu et al., 2025, eq. 13) on both sides: 0 for a length in
``[min, max]``; ``-d / margin`` for a length ``d`` units outside the range, down to -1 at
``margin`` units and beyond. Tokens are counted with ``tokenizer`` (a Hugging Face name or
folder; a reward reads text, not the policy's ids).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from rewardtune.rewards.registry import RewardBase, reward_type
from rewardtune.types import RewardtuneError


@reward_type
class LengthSpec(RewardBase):
    type: Literal["length"]
    higher_is_better: ClassVar = True
    unit: Literal["words", "tokens"] = "words"
    min: int = Field(0, ge=0)
    max: int = Field(gt=0)
    margin: int = Field(gt=0)  # units outside [min, max] at which the penalty reaches -1
    tokenizer: str | None = None  # unit tokens: the tokenizer that counts them

    summary: ClassVar = ("unit", "min", "max", "margin")

    @model_validator(mode="after")
    def _check(self) -> LengthSpec:
        if self.min > self.max:
            raise ValueError("min must be <= max")
        if self.unit == "tokens" and not self.tokenizer:
            raise ValueError(
                "unit tokens needs tokenizer: the name or folder of the tokenizer that counts "
                "them (e.g. the policy's), or unit: words"
            )
        return self

    def scorer(self, where: str) -> LengthReward:
        counter = _token_counter(self.tokenizer, where) if self.unit == "tokens" else _words
        return LengthReward(self.min, self.max, self.margin, counter)


def length_penalty(length: int, low: int, high: int, margin: int) -> float:
    """0 inside ``[low, high]``, falling linearly to -1 at ``margin`` units outside it."""
    outside = max(low - length, length - high, 0)
    return -min(outside / margin, 1.0)


def _words(texts: list[str]) -> list[int]:
    return [len(text.split()) for text in texts]


def _token_counter(name: str, where: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise RewardtuneError(
            f"{where}.tokenizer: cannot load {name!r}: {str(err).splitlines()[0][:200]} (check "
            "the name or folder, or use unit: words)"
        ) from err

    def count(texts: list[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    return count


class LengthReward:
    """``length_penalty`` of each response's length (``count``: texts -> lengths)."""

    def __init__(self, low: int, high: int, margin: int, count=_words):
        self.low, self.high, self.margin, self.count = low, high, margin, count
        self.name = "length"

    def __call__(
        self, prompts: list[str], responses: list[str], columns: dict | None = None
    ) -> list[float]:
        lengths = self.count(list(responses))
        return [length_penalty(n, self.low, self.high, self.margin) for n in lengths]
