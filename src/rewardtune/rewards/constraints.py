"""IFEval-style verifiable instructions: each row of the data lists the constraints its
response must meet, and the reward is the share met (or 1 only when all are met).

A row's column (default ``constraints``) holds a list of ``{kind, ...}`` dicts (or that list as
a JSON string, as a CSV cell holds it), e.g.::

    [{"kind": "lowercase"}, {"kind": "words", "max": 30}, {"kind": "ends_with", "phrase": "Bye."}]

The kinds, their parameters and what each checks (``CHECKERS`` below):

- ``lowercase`` / ``uppercase``: at least one letter, and no letter of the other case.
- ``words``, ``sentences``, ``bullets``, ``placeholders``: a count within ``min`` / ``max``
  (either may be left out) or equal to ``count``. A word is a run of letters or digits, with
  inner apostrophes or hyphens (``don't``, ``well-known``); a sentence ends at ``.``, ``!`` or
  ``?`` followed by a space or the end; a bullet is a line starting with ``- `` or ``* ``
  (after indentation; ``-5`` or ``*bold*`` are not); a placeholder is ``[name]``.
- ``include`` / ``exclude``: every one / none of ``words`` appears as a whole word, ignoring
  case; ``include_any``: at least one of them does (e.g. a check that a response is on its
  request's topic).
- ``starts_with`` / ``ends_with``: the response, stripped of surrounding whitespace, starts /
  ends with ``phrase``, ignoring case (nothing may follow the phrase).
- ``no_commas``: no ``,`` anywhere, quoted words included.
- ``json``: the whole response parses as JSON; one Markdown code fence around it
  (```` ``` ```` or ```` ```json ````) is accepted, other text around it is not.
- ``title``: a title in double angle brackets, ``<<like this>>``, on one line.

A malformed constraint (an unknown kind, a missing or unknown parameter, a wrong type) is a
RewardtuneError naming the row and the kind; ``ConstraintsSpec.check_column`` finds the
first before training starts, as the data is read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import ClassVar, Literal

from rewardtune.rewards.registry import RewardBase, reward_type
from rewardtune.types import RewardtuneError


@reward_type
class ConstraintsSpec(RewardBase):
    type: Literal["constraints"]
    higher_is_better: ClassVar = True
    column: str = "constraints"  # the data column holding each row's list of constraints
    mode: Literal["share", "all"] = "share"  # share met, or 1 only when every one is met

    summary: ClassVar = ("column", "mode")

    def needs_columns(self) -> set[str]:
        return {self.column}

    def check_column(self, column: str, value, where: str) -> None:
        if column == self.column:
            parse_constraints(value, where)

    def scorer(self, where: str) -> ConstraintsReward:
        return ConstraintsReward(self.column, self.mode, where)


class ConstraintsReward:
    """``reward(prompts, responses, columns)``: per response, the share of its row's
    constraints met (``mode: share``) or 1.0 when all are met, else 0.0 (``mode: all``)."""

    def __init__(self, column: str = "constraints", mode: str = "share", where: str = "reward"):
        self.column, self.mode, self.where = column, mode, where
        self.name = "constraints" if mode == "share" else "constraints_all"

    def __call__(
        self, prompts: list[str], responses: list[str], columns: dict[str, list] | None = None
    ) -> list[float]:
        values = (columns or {}).get(self.column)
        if values is None:
            raise RewardtuneError(
                f"{self.where}: the constraints reward reads column {self.column!r}, which the "
                "data does not pass; add it to every row (or set column: to the right name)"
            )
        if len(values) != len(responses):
            raise RewardtuneError(
                f"{self.where}: column {self.column!r} has {len(values)} entries for "
                f"{len(responses)} responses"
            )
        scores = []
        for number, (value, response) in enumerate(zip(values, responses, strict=True), 1):
            where = f"{self.where}: {self.column!r} of the row of response {number} of this batch"
            met = constraints_met(parse_constraints(value, where), response)
            share = sum(met) / len(met)
            scores.append(share if self.mode == "share" else float(all(met)))
        return scores


def constraints_met(constraints: list[dict], response: str) -> list[bool]:
    """Whether ``response`` meets each of ``constraints`` (already parsed)."""
    return [CHECKERS[c["kind"]][0](response, c) for c in constraints]


def parse_constraints(value, where: str) -> list[dict]:
    """A row's constraints as a list of checked dicts; ``where`` (``'constraints' of row 3``)
    starts the error of a malformed one."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise RewardtuneError(
                f"{where}: not a JSON list of constraints ({err.msg}); write e.g. "
                '[{"kind": "lowercase"}]'
            ) from err
    if not isinstance(value, list) or not value:
        raise RewardtuneError(
            f"{where}: expected a non-empty list of {{kind, ...}} constraints, got "
            f"{type(value).__name__} {str(value)[:60]}"
        )
    return [_check_constraint(c, where) for c in value]


def _check_constraint(constraint, where: str) -> dict:
    if not isinstance(constraint, dict) or "kind" not in constraint:
        raise RewardtuneError(
            f'{where}: each constraint is a dict with a "kind", got {str(constraint)[:60]}'
        )
    kind = constraint["kind"]
    if kind not in CHECKERS:
        raise RewardtuneError(
            f"{where}: unknown constraint kind {kind!r}; the kinds are {', '.join(CHECKERS)}"
        )
    params = {k: v for k, v in constraint.items() if k != "kind"}
    problem = CHECKERS[kind][1](params)
    if problem:
        raise RewardtuneError(f"{where}: constraint {kind!r} {problem}")
    return constraint


# --- what a text is made of -------------------------------------------------------------

WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
BULLET = re.compile(r"^\s*[-*]\s+\S", re.MULTILINE)
PLACEHOLDER = re.compile(r"\[[^\[\]\n]+\]")
TITLE = re.compile(r"<<[^\n<>]*\S[^\n<>]*>>")
FENCE = re.compile(r"^```[A-Za-z]*\n(.*)\n```$", re.DOTALL)


def words(text: str) -> list[str]:
    return WORD.findall(text)


def count_sentences(text: str) -> int:
    """Pieces between sentence ends that hold a word (a trailing piece without an end counts)."""
    return sum(bool(WORD.search(piece)) for piece in SENTENCE_END.split(text))


def _has_word(text: str, word: str) -> bool:
    return re.search(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", text, re.IGNORECASE) is not None


def _is_json(text: str) -> bool:
    text = text.strip()
    fenced = FENCE.match(text)
    try:
        json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError:
        return False
    return True


def _in_range(n: int, c: dict) -> bool:
    if "count" in c:
        return n == c["count"]
    return c.get("min", 0) <= n and ("max" not in c or n <= c["max"])


# --- parameter checks: None when fine, else what is wrong -------------------------------


def _no_params(params: dict) -> str | None:
    return f"takes no parameters, got {', '.join(params)}" if params else None


def _count_params(params: dict) -> str | None:
    unknown = set(params) - {"min", "max", "count"}
    if unknown:
        return f"has unknown parameter {sorted(unknown)[0]!r} (it takes min, max or count)"
    if not params:
        return "needs min, max or count"
    if "count" in params and len(params) > 1:
        return "takes count, or min and/or max, not both"
    for key, n in params.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            return f"needs {key} to be a whole number >= 0, got {n!r}"
    if params.get("min", 0) > params.get("max", params.get("min", 0)):
        return f"has min {params['min']} above max {params['max']}"
    return None


def _words_param(params: dict) -> str | None:
    if set(params) != {"words"}:
        return "needs exactly one parameter, words: a list of words"
    value = params["words"]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(w, str) and w.strip() for w in value)
    ):
        return "needs words to be a non-empty list of non-empty strings"
    return None


def _phrase_param(params: dict) -> str | None:
    if set(params) != {"phrase"}:
        return "needs exactly one parameter, phrase: the text"
    if not isinstance(params["phrase"], str) or not params["phrase"].strip():
        return "needs phrase to be a non-empty string"
    return None


# kind -> (check(response, constraint) -> bool, parameter check)
CHECKERS: dict[str, tuple[Callable[[str, dict], bool], Callable[[dict], str | None]]] = {
    "lowercase": (
        lambda r, c: any(ch.isalpha() for ch in r) and not any(ch.isupper() for ch in r),
        _no_params,
    ),
    "uppercase": (
        lambda r, c: any(ch.isalpha() for ch in r) and not any(ch.islower() for ch in r),
        _no_params,
    ),
    "words": (lambda r, c: _in_range(len(words(r)), c), _count_params),
    "sentences": (lambda r, c: _in_range(count_sentences(r), c), _count_params),
    "bullets": (lambda r, c: _in_range(len(BULLET.findall(r)), c), _count_params),
    "placeholders": (lambda r, c: _in_range(len(PLACEHOLDER.findall(r)), c), _count_params),
    "include": (lambda r, c: all(_has_word(r, w) for w in c["words"]), _words_param),
    "include_any": (lambda r, c: any(_has_word(r, w) for w in c["words"]), _words_param),
    "exclude": (lambda r, c: not any(_has_word(r, w) for w in c["words"]), _words_param),
    "starts_with": (
        lambda r, c: r.strip().lower().startswith(c["phrase"].strip().lower()),
        _phrase_param,
    ),
    "ends_with": (
        lambda r, c: r.strip().lower().endswith(c["phrase"].strip().lower()),
        _phrase_param,
    ),
    "no_commas": (lambda r, c: "," not in r, _no_params),
    "json": (lambda r, c: _is_json(r), _no_params),
    "title": (lambda r, c: TITLE.search(r) is not None, _no_params),
}
