"""``format``: 1 when the response matches a regular expression, else 0 (e.g. a required
``<think>...</think><answer>...</answer>`` layout)."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import field_validator

from rewardtune.rewards.registry import RewardBase, reward_type


@reward_type
class FormatSpec(RewardBase):
    type: Literal["format"]
    higher_is_better: ClassVar = True
    pattern: str  # Python regular expression; `.` matches newlines too
    mode: Literal["full", "search"] = "full"  # full: the whole (stripped) response; search: a part

    summary: ClassVar = ("pattern", "mode")

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as err:
            raise ValueError(f"{value!r}: not a regular expression ({err})") from None
        return value

    def scorer(self, where: str) -> FormatReward:
        return FormatReward(self.pattern, self.mode)


class FormatReward:
    """1.0 where ``pattern`` matches the whole stripped response (``full``) or a part of it
    (``search``), else 0.0."""

    def __init__(self, pattern: str, mode: str = "full"):
        self.regex = re.compile(pattern, re.DOTALL)
        self.mode = mode
        self.name = "format"

    def __call__(
        self, prompts: list[str], responses: list[str], columns: dict | None = None
    ) -> list[float]:
        find = self.regex.fullmatch if self.mode == "full" else self.regex.search
        return [float(find(r.strip()) is not None) for r in responses]
