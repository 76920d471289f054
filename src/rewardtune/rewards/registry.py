"""The reward types: every module of this package registers its spec classes here.

A reward type is one file in ``rewardtune/rewards/``: a spec (a pydantic section with
``type: Literal["name"]``, decorated with ``@reward_type``) whose ``scorer(where)`` builds the
scorer (``config.base.Section`` is the base of every section). Nothing else changes: the files are found by listing the package, ``config`` builds the
recipe's ``reward:`` union and ``eval.toxicity`` from these tables, and the report describes a
term with ``describe_term``. ``config`` imports every type, so a type imports heavy libraries
(transformers, a server client) inside the functions that need them.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from typing import Annotated, Any, ClassVar, TypeVar, get_args

from pydantic import AfterValidator, Field

from rewardtune.config.base import Section
from rewardtune.rewards.base import Reward
from rewardtune.text import template_fields

ROW_FIELDS = {"prompt", "response"}  # what an input template may name besides the columns


def checked_input(value: str) -> str:
    """``input``: response, prompt+response, or a template over the row naming {response}."""
    if value in ("prompt+response", "response"):
        return value
    if "response" not in template_fields(value):
        raise ValueError(
            f"{value!r} is not response, prompt+response or a template over the row with "
            '{response}, e.g. "{question}\\n{response}"'
        )
    return value


# What a text scorer reads: "response", "prompt+response", or a template over the row
Input = Annotated[str, AfterValidator(checked_input)]

# The order error messages and the schema have always listed; new types follow, in file order.
LISTED_FIRST = ("classifier", "profanity", "vader", "python", "http")


def input_columns(spec: Section) -> set[str]:
    """The columns a spec's ``input`` template names (none for response / prompt+response)."""
    text = getattr(spec, "input", None)
    if not isinstance(text, str) or text in ("prompt+response", "response"):
        return set()
    return set(template_fields(text)) - ROW_FIELDS


class RewardBase(Section):
    """One term of ``reward:`` (or of ``eval.extra_scorers``), the fields every type takes."""

    weight: float = 1.0
    retries: int = Field(0, ge=0)
    retry_backoff_s: float = Field(0.0, ge=0)  # waits backoff, 2*backoff, 4*backoff, ...
    name: str | None = None  # shown in stats; defaults to the type (and label)

    summary: ClassVar[tuple[str, ...]] = ()  # the fields the report shows after the type
    # As an extra scorer: is a rise good (a check met, a closer match)? None: unknown
    higher_is_better: ClassVar[bool | None] = None

    def scorer(self, where: str) -> Reward:
        """The scorer this section describes; ``where`` (``reward.0``) starts its errors."""
        raise NotImplementedError

    def needs_columns(self) -> set[str]:
        """The data columns every row must have for this reward (checked before training);
        by default those its ``input`` template names."""
        return input_columns(self)

    def check_column(self, column: str, value: Any, where: str) -> None:
        """Check one row's ``value`` of a column this reads, before training (``where``
        names the row and starts the error); by default any value is taken."""


class ToxicityBase(Section):
    """``eval.toxicity``: a scorer of P(toxic) in [0, 1]."""

    def scorer(self, where: str) -> Reward:
        raise NotImplementedError

    def needs_columns(self) -> set[str]:
        return input_columns(self)

    def check_column(self, column: str, value: Any, where: str) -> None:
        """As ``RewardBase.check_column``."""


Spec = TypeVar("Spec", bound=type[Section])

REWARD_TYPES: dict[str, type[RewardBase]] = {}
TOXICITY_TYPES: dict[str, type[ToxicityBase]] = {}


def reward_type(cls: Spec) -> Spec:
    """Class decorator: ``cls`` (a RewardBase) is a type of ``reward:`` and ``extra_scorers``."""
    return _register(REWARD_TYPES, cls)


def toxicity_type(cls: Spec) -> Spec:
    """Class decorator: ``cls`` (a ToxicityBase) is a type of ``eval.toxicity``."""
    return _register(TOXICITY_TYPES, cls)


def _register(table: dict[str, Any], cls: Spec) -> Spec:
    name = type_name(cls)
    if table.get(name, cls) is not cls:
        raise TypeError(f"reward type {name!r} is defined twice: {table[name]} and {cls}")
    table[name] = cls
    return cls


def type_name(cls: type[Section]) -> str:
    """The tag of a spec class: the value of its ``type: Literal["..."]`` field."""
    field = cls.model_fields.get("type")
    tags = get_args(field.annotation) if field else ()
    if len(tags) != 1 or not isinstance(tags[0], str):
        raise TypeError(f'{cls} needs a field `type: Literal["its-name"]`')
    return tags[0]


@cache
def discover() -> None:
    """Import every module of this package once, so that each registers its types."""
    package = __name__.rpartition(".")[0]
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        importlib.import_module(f"{package}.{module.name}")


def reward_types() -> tuple[type[RewardBase], ...]:
    discover()
    return _ordered(REWARD_TYPES)


def toxicity_types() -> tuple[type[ToxicityBase], ...]:
    discover()
    return _ordered(TOXICITY_TYPES)


def _ordered(table: dict[str, Any]) -> tuple[Any, ...]:
    def rank(name: str) -> int:
        return LISTED_FIRST.index(name) if name in LISTED_FIRST else len(LISTED_FIRST)

    return tuple(table[name] for name in sorted(table, key=rank))


def is_type_name(part: object) -> bool:
    """Whether a pydantic error location part is a union's tag (left out of messages)."""
    return part in REWARD_TYPES or part in TOXICITY_TYPES


def describe_term(term: dict) -> str:
    """One ``reward:`` term of a run's config.yaml as the report shows it, e.g.
    ``classifier × 1.0 (model=m, label=nothate, output=logit)``."""
    discover()
    spec = REWARD_TYPES.get(str(term.get("type")))
    details = [f"{k}={term[k]}" for k in (spec.summary if spec else ()) if k in term]
    text = f"{term.get('type', '?')} × {term.get('weight', 1.0)}"
    return f"{text} ({', '.join(details)})" if details else text
