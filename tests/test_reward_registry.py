"""Reward types come from one registry: a new type is one file in rewards/ (issue 14)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

import rewardtune
from rewardtune.rewards import describe_term
from rewardtune.rewards.registry import (
    REWARD_TYPES,
    RewardBase,
    reward_type,
    reward_types,
    toxicity_types,
    type_name,
)

# A whole reward type, as a contributor would add it: this one file and nothing else.
LENGTH_REWARD = '''
"""Characters per response as reward."""

from typing import ClassVar, Literal

from pydantic import Field

from rewardtune.rewards.registry import Input, RewardBase, reward_type


@reward_type
class LengthSpec(RewardBase):
    type: Literal["length"]
    input: Input = "response"
    per: float = Field(1.0, gt=0)

    summary: ClassVar = ("per",)

    def scorer(self, where: str):
        return LengthReward(self.per)


class LengthReward:
    name = "length"

    def __init__(self, per: float):
        self.per = per

    def __call__(self, prompts, responses):
        return [len(r) / self.per for r in responses]
'''

USE_IT = """
import json, sys
from rewardtune.config import json_schema, load_config
from rewardtune.rewards import build_reward, describe_term
from rewardtune.types import RewardtuneError

cfg = load_config(sys.argv[1])
reward = build_reward(cfg.reward)
try:
    load_config(sys.argv[1], ["reward.0.per=0"])
except RewardtuneError as err:
    refused = str(err)
scored = reward.score(["p", "p"], ["ab", "abcd"])
print(json.dumps({
    "scores": scored.total,
    "terms": scored.terms,
    "report": describe_term(cfg.public_dump()["reward"][0]),
    "refused": refused,
    "in_schema": '"length"' in json_schema(),
}))
"""


def test_a_new_reward_type_is_one_file_in_rewards(tmp_path: Path):
    """Copy the package, drop one file into rewards/, and a recipe can use the new type: it
    validates, scores, appears in the schema and the report, with no other file touched."""
    package = tmp_path / "src" / "rewardtune"
    shutil.copytree(Path(rewardtune.__file__).parent, package, ignore=_pycache)
    (package / "rewards" / "length.py").write_text(LENGTH_REWARD)
    recipe = tmp_path / "length.yaml"
    recipe.write_text("reward:\n  - {type: length, per: 2, weight: 0.5}\neval: {enabled: false}\n")
    env = os.environ | {"PYTHONPATH": str(tmp_path / "src")}
    result = subprocess.run(
        [sys.executable, "-c", USE_IT, str(recipe)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["scores"] == [0.5, 1.0] and out["terms"] == {"length": [1.0, 2.0]}
    assert out["report"] == "length × 0.5 (per=2.0)"
    assert out["refused"].endswith("reward.0.per: Input should be greater than 0")
    assert out["in_schema"]


def _pycache(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n == "__pycache__"]


def test_the_shipped_types_keep_the_order_messages_have_always_listed():
    names = [type_name(t) for t in reward_types()]
    assert names[:5] == ["classifier", "profanity", "vader", "python", "http"]
    # the checks against the data (issue 21) follow, in file order
    assert {"match", "format", "length", "rouge"} <= set(names[5:])
    assert [type_name(t) for t in toxicity_types()] == ["classifier", "profanity"]


def test_a_type_name_is_registered_once():
    class Twin(RewardBase):
        type: Literal["vader"]

    with pytest.raises(TypeError, match="'vader' is defined twice"):
        reward_type(Twin)
    assert REWARD_TYPES["vader"] is not Twin


def test_a_spec_without_a_type_literal_is_refused():
    class Untyped(RewardBase):
        type: str

    with pytest.raises(TypeError, match="needs a field `type"):
        reward_type(Untyped)


@pytest.mark.parametrize(
    ("term", "text"),
    [
        (
            {
                "type": "classifier",
                "model": "m",
                "input": "response",
                "label": "nothate",
                "output": "logit",
            },
            "classifier × 1.0 (model=m, label=nothate, output=logit)",
        ),
        ({"type": "profanity", "weight": 2.0, "output": "prob"}, "profanity × 2.0 (output=prob)"),
        ({"type": "vader", "weight": 1.0, "input": "response"}, "vader × 1.0"),
        ({"type": "python", "weight": 0.5, "function": "m:f"}, "python × 0.5 (function=m:f)"),
        ({"type": "http", "url": "https://REDACTED@h/"}, "http × 1.0 (url=https://REDACTED@h/)"),
        ({"type": "telepathy", "url": "u"}, "telepathy × 1.0"),  # a type this install lacks
        ({}, "? × 1.0"),
    ],
)
def test_describe_term_shows_the_fields_each_type_names(term, text):
    assert describe_term(term) == text
