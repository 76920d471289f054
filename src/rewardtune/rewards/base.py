"""The Reward protocol, score validation, and the weighted sum of several rewards."""

from __future__ import annotations

import inspect
import numbers
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from rewardtune.text import one_line
from rewardtune.types import RewardtuneError

Columns = dict[str, list]  # column name -> one value per response (the response's data row)

_sleep = time.sleep  # the backoff's wait; tests replace it


class RewardFailed(RewardtuneError):
    """A reward raised, timed out, or returned something that is not one score per response
    (after its retries): the run stops, its last whole step can be kept and resumed."""


@runtime_checkable
class Reward(Protocol):
    """Scores text: one float per (prompt, response) pair, higher is better. ``columns``
    holds the fields of each response's data row (``{}`` when the data has none)."""

    name: str

    def __call__(
        self, prompts: list[str], responses: list[str], columns: Columns | None = None
    ) -> list[float]: ...


def takes_columns(reward) -> bool:
    """Whether ``reward`` is called with the columns: a third parameter (or ``*args``); a
    scorer written before columns existed takes (prompts, responses) only."""
    try:
        params = list(inspect.signature(reward).parameters.values())
    except (TypeError, ValueError):  # a builtin or C callable: call it as before
        return False
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return True
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) >= 3


def check_scores(name: str, scores, n: int) -> list[float]:
    """Validate what a reward returned: a sequence of ``n`` real numbers (NaN is let through
    for the trainer to stop on or skip)."""
    if hasattr(scores, "tolist"):  # numpy arrays and tensors
        scores = scores.tolist()
    if not isinstance(scores, list | tuple):
        raise RewardFailed(
            f"reward {name!r} returned {type(scores).__name__}; it must return a list of {n} floats"
        )
    if len(scores) != n:
        raise RewardFailed(
            f"reward {name!r} returned {len(scores)} scores for {n} responses; return one per response"
        )
    for i, value in enumerate(scores):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise RewardFailed(
                f"reward {name!r} returned {type(value).__name__} {value!r} at index {i}; "
                "scores must be numbers"
            )
    return [float(v) for v in scores]


def join(
    prompts: list[str], responses: list[str], mode: str, columns: Columns | None = None
) -> list[str]:
    """What a text scorer reads (its ``input``): the response alone, prompt + response, or a
    template over the row such as ``"{question}\n{response}"`` (``{prompt}``, ``{response}``
    and the row's columns)."""
    if mode == "response":
        return list(responses)
    if mode == "prompt+response":
        return [p + r for p, r in zip(prompts, responses, strict=True)]
    columns = columns or {}
    return [
        mode.format(**{name: values[i] for name, values in columns.items()}, prompt=p, response=r)
        for i, (p, r) in enumerate(zip(prompts, responses, strict=True))
    ]


@dataclass(frozen=True)
class Scores:
    """What a weighted reward said of a batch: the total per response, and each term's
    (unweighted) scores by the term's name."""

    total: list[float]
    terms: dict[str, list[float]]


class WeightedReward:
    """The total reward: sum of weight_i * reward_i. ``score`` returns the total and each
    term (``Scores``); calling it returns the total alone (the ``Reward`` protocol)."""

    def __init__(
        self,
        terms: list[tuple[Reward, float]],
        retries: list[int] | None = None,
        backoffs: list[float] | None = None,
    ):
        self.terms = terms
        self.retries = retries or [0] * len(terms)
        self.backoffs = backoffs or [0.0] * len(terms)
        self.name = "+".join(r.name for r, _ in terms)

    def score(
        self, prompts: list[str], responses: list[str], columns: Columns | None = None
    ) -> Scores:
        total = [0.0] * len(responses)
        by_term: dict[str, list[float]] = {}
        for (reward, weight), retries, backoff in zip(
            self.terms, self.retries, self.backoffs, strict=True
        ):
            scores = call_with_retries(reward, prompts, responses, retries, backoff, columns)
            by_term[reward.name] = scores
            total = [t + weight * s for t, s in zip(total, scores, strict=True)]
        return Scores(total, by_term)

    def __call__(
        self, prompts: list[str], responses: list[str], columns: Columns | None = None
    ) -> list[float]:
        return self.score(prompts, responses, columns).total


def call_with_retries(
    reward: Reward,
    prompts: list[str],
    responses: list[str],
    retries: int,
    backoff_s: float = 0.0,
    columns: Columns | None = None,
) -> list[float]:
    """Call a reward (with ``columns`` where it takes them), retrying ``retries`` times when
    it raises (waiting ``backoff_s``, then twice that, ...); validate what it returns.
    ``sys.exit`` inside a reward is a failure of the reward, not the end of training."""
    args = (prompts, responses, columns or {}) if takes_columns(reward) else (prompts, responses)
    for attempt in range(retries + 1):
        try:
            scores = reward(*args)
            break
        except RewardFailed:
            raise
        except RewardtuneError as err:  # a fault the reward names itself: retrying cannot help
            raise RewardFailed(str(err)) from err
        except (Exception, SystemExit) as err:  # a user's reward can raise anything
            if attempt < retries:
                _sleep(backoff_s * 2**attempt)
            else:
                tries = f" after {retries + 1} tries" if retries else ""
                raise RewardFailed(
                    f"reward {reward.name!r} failed{tries}: {type(err).__name__}: "
                    f"{one_line(str(err), 200)}"
                ) from err
    return check_scores(reward.name, scores, len(responses))
