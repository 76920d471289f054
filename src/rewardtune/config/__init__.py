"""Typed, validated configuration in two layers: ``config.base`` (the section base class, below
``rewards``) and ``config.recipe`` (the recipe, whose ``reward:`` union is built from the reward
types, above ``rewards``).

``from rewardtune.config import Config`` reads the recipe module on first use: importing
``config.base`` from a reward spec must not pull in the recipe (which imports the rewards).
"""

from __future__ import annotations

import importlib
from typing import Any

from rewardtune.config.base import PUBLIC, Section, is_public

__all__ = ["PUBLIC", "Section", "is_public"]


def __getattr__(name: str) -> Any:
    recipe = importlib.import_module("rewardtune.config.recipe")
    try:
        return getattr(recipe, name)
    except AttributeError:
        raise AttributeError(f"module 'rewardtune.config' has no attribute {name!r}") from None
