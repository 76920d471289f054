"""``match``: the answer extracted from a response, compared with the row's reference column.

The check of RL with verifiable rewards (GSM8K's last number, MATH's ``\\boxed{}``): 1 when the
extracted answer equals the reference (exactly, or after normalising case, whitespace and
numbers), ``format_credit`` when an answer was found but is wrong, 0 when none was found.
"""

from __future__ import annotations

import math
import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from rewardtune.rewards.registry import RewardBase, reward_type
from rewardtune.types import RewardtuneError

NUMBER = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d+)?|\.\d+)")
EXTRACTS = ("last_number", "boxed", "full")


@reward_type
class MatchSpec(RewardBase):
    type: Literal["match"]
    higher_is_better: ClassVar = True
    column: str = "answer"  # the reference answer (or a list of accepted answers)
    extract: str = "last_number"  # last_number | boxed | regex:<pattern> | full
    compare: Literal["exact", "normalized"] = "normalized"
    tolerance: float = Field(1e-6, ge=0)  # normalized: numbers within this are equal
    format_credit: float = Field(0.0, ge=0, le=1)  # an answer was found but is wrong

    summary: ClassVar = ("column", "extract", "compare")

    @field_validator("extract")
    @classmethod
    def _check_extract(cls, value: str) -> str:
        if value.startswith("regex:"):
            try:
                re.compile(value.removeprefix("regex:"))
            except re.error as err:
                raise ValueError(f"{value!r}: not a regular expression ({err})") from None
        elif value not in EXTRACTS:
            raise ValueError(f"{value!r} is not one of last_number, boxed, regex:<pattern>, full")
        return value

    def needs_columns(self) -> set[str]:
        return {self.column}

    def scorer(self, where: str) -> MatchReward:
        return MatchReward(
            self.column, self.extract, self.compare, self.tolerance, self.format_credit, where
        )


def extract_answer(response: str, extract: str) -> str | None:
    """The answer ``extract`` finds in ``response``, or None when there is none: the last
    number, the last ``\\boxed{...}`` (nested braces kept), the last match of a regex (its
    first group when it has one), or the whole response stripped."""
    if extract == "last_number":
        numbers = NUMBER.findall(response)
        return numbers[-1] if numbers else None
    if extract == "boxed":
        return _last_boxed(response)
    if extract == "full":
        return response.strip() or None
    matches = list(re.finditer(extract.removeprefix("regex:"), response))
    if not matches:
        return None
    last = matches[-1]
    return last.group(1) if last.re.groups else last.group(0)


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None  # unclosed


def _as_number(text: str) -> float | None:
    cleaned = text.strip().replace(",", "").removeprefix("$").removesuffix("%").rstrip(".")
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def normalize(text: str) -> str:
    """Case folded, whitespace collapsed, a trailing period dropped."""
    return " ".join(str(text).split()).casefold().rstrip(".")


def answers_equal(answer: str, reference, compare: str, tolerance: float) -> bool:
    """Whether ``answer`` matches ``reference`` (or one of a list of references)."""
    if isinstance(reference, list | tuple):
        return any(answers_equal(answer, r, compare, tolerance) for r in reference)
    reference = str(reference)
    if compare == "exact":
        return answer.strip() == reference.strip()
    a, b = _as_number(answer), _as_number(reference)
    if a is not None and b is not None:
        return abs(a - b) <= tolerance
    return normalize(answer) == normalize(reference)


class MatchReward:
    """1 for the right answer, ``format_credit`` for a wrong one, 0 for none."""

    def __init__(
        self,
        column: str = "answer",
        extract: str = "last_number",
        compare: str = "normalized",
        tolerance: float = 1e-6,
        format_credit: float = 0.0,
        where: str = "reward",
    ):
        self.column, self.extract, self.compare = column, extract, compare
        self.tolerance, self.format_credit, self.where = tolerance, format_credit, where
        self.name = "match"

    def __call__(
        self, prompts: list[str], responses: list[str], columns: dict | None = None
    ) -> list[float]:
        references = column_values(columns, self.column, self.where, "match", len(responses))
        scores = []
        for response, reference in zip(responses, references, strict=True):
            answer = extract_answer(response, self.extract)
            if answer is None:
                scores.append(0.0)
            elif answers_equal(answer, reference, self.compare, self.tolerance):
                scores.append(1.0)
            else:
                scores.append(self.format_credit)
        return scores


def column_values(columns: dict | None, column: str, where: str, kind: str, n: int) -> list:
    """The values of ``column`` for the ``n`` responses; a RewardtuneError when the data has
    no such column (or a response's row lacks it)."""
    values = (columns or {}).get(column)
    if values is None or len(values) != n or any(v is None for v in values):
        raise RewardtuneError(
            f"{where} ({kind}): the data has no column {column!r} for every response; set "
            f"{where}.column to a column of the data (or add it to each row)"
        )
    return values
