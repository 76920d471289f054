"""The `constraints` reward: each kind on written-out responses, near misses included; share
met against all-or-nothing; malformed constraints named by row and kind; the shipped sets."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest

from conftest import run_cli, set_args, tiny_overrides
from rewardtune.config import load_config
from rewardtune.rewards import build_scorer
from rewardtune.rewards.constraints import (
    CHECKERS,
    ConstraintsReward,
    ConstraintsSpec,
    constraints_met,
    count_sentences,
    parse_constraints,
    words,
)
from rewardtune.types import RewardtuneError


def met(constraint: dict, response: str) -> bool:
    (ok,) = constraints_met(parse_constraints([constraint], "test"), response)
    return ok


# (constraint, response, met?): every kind, each with a near miss beside a pass
CASES = [
    ({"kind": "lowercase"}, "all in lowercase, even numbers like 42.", True),
    ({"kind": "lowercase"}, "all in lowercase except one Capital.", False),
    ({"kind": "lowercase"}, "", False),  # no letter at all is not an answer in lowercase
    ({"kind": "lowercase"}, "123 ...", False),
    ({"kind": "lowercase"}, "café à la crème", True),
    ({"kind": "uppercase"}, "STOP RIGHT THERE, 2 TIMES!", True),
    ({"kind": "uppercase"}, "STOP RIGHT THERe", False),
    ({"kind": "words", "max": 5}, "one two three four five", True),
    ({"kind": "words", "max": 5}, "one two three four five six", False),
    ({"kind": "words", "min": 50}, " ".join(["w"] * 50), True),
    ({"kind": "words", "min": 50}, " ".join(["w"] * 49), False),
    ({"kind": "words", "count": 3}, "don't over-think it", True),  # inner ' and - join
    ({"kind": "words", "count": 3}, "one - two three", True),  # a lone dash is no word
    ({"kind": "words", "min": 2, "max": 3}, "hello", False),
    ({"kind": "sentences", "max": 2}, "First one. Second one!", True),
    ({"kind": "sentences", "max": 2}, "First one. Second one! Third?", False),
    ({"kind": "sentences", "count": 1}, "It costs 3.50 dollars today.", True),  # no split in 3.50
    ({"kind": "sentences", "count": 2}, "Ends without a stop. Still counts", True),
    ({"kind": "include", "words": ["water", "Light"]}, "Water it and give it light.", True),
    ({"kind": "include", "words": ["water"]}, "Use a watering can.", False),  # not a whole word
    ({"kind": "include", "words": ["water", "light"]}, "Just water it.", False),
    ({"kind": "include_any", "words": ["water", "light"]}, "Just water it.", True),
    ({"kind": "include_any", "words": ["water", "light"]}, "Watering in daylight.", False),
    ({"kind": "exclude", "words": ["very"]}, "Everything is fine.", True),  # inside a word
    ({"kind": "exclude", "words": ["very"]}, "It is Very good.", False),
    ({"kind": "exclude", "words": ["sure"]}, "Make sure-footed steps.", False),  # - splits
    ({"kind": "starts_with", "phrase": "Sure thing"}, "  sure thing, here you go.", True),
    ({"kind": "starts_with", "phrase": "Sure thing"}, "Okay, sure thing.", False),
    ({"kind": "ends_with", "phrase": "Good luck!"}, "Try it. good luck!\n", True),
    ({"kind": "ends_with", "phrase": "Good luck!"}, "Try it. Good luck! :)", False),
    ({"kind": "ends_with", "phrase": "Good luck!"}, "Try it. Good luck", False),  # cut short
    ({"kind": "no_commas"}, "No commas here; none at all.", True),
    ({"kind": "no_commas"}, 'He said "yes," and left.', False),  # a comma inside quotes
    ({"kind": "no_commas"}, "1,000 people", False),
    ({"kind": "bullets", "count": 2}, "Tips:\n- water it\n- give it light", True),
    ({"kind": "bullets", "count": 2}, "* water it\n  * give it light", True),  # * and indent
    ({"kind": "bullets", "count": 2}, "- water it\n-5 degrees is cold", False),  # no space
    ({"kind": "bullets", "count": 1}, "*bold* move\n- one", True),  # *bold* is no bullet
    ({"kind": "bullets", "count": 2}, "1. water it\n2. give it light", False),  # numbered
    ({"kind": "placeholders", "min": 2}, "Dear [name], see you at [address].", True),
    ({"kind": "placeholders", "min": 2}, "Dear [name], see you soon.", False),
    ({"kind": "placeholders", "min": 1}, "Dear [], see you.", False),  # empty brackets
    ({"kind": "json"}, '{"a": [1, 2]}', True),
    ({"kind": "json"}, '```json\n{"a": 1}\n```', True),  # one code fence is accepted
    ({"kind": "json"}, "```\n[1, 2]\n```", True),
    ({"kind": "json"}, 'Here it is: {"a": 1}', False),  # text around it is not
    ({"kind": "json"}, "{'a': 1}", False),  # single quotes are not JSON
    ({"kind": "title"}, "<<A Day Out>>\nWe went to the sea.", True),
    ({"kind": "title"}, "<< >> We went to the sea.", False),  # an empty title
    ({"kind": "title"}, "<A Day Out> We went to the sea.", False),
    ({"kind": "title"}, "<<A Day\nOut>>", False),  # on one line
]


@pytest.mark.parametrize("constraint, response, expected", CASES)
def test_each_kind_on_written_cases(constraint, response, expected):
    assert met(constraint, response) is expected


def test_every_kind_has_a_pass_and_a_miss():
    for kind in CHECKERS:
        results = {expected for c, _, expected in CASES if c["kind"] == kind}
        assert results == {True, False}, kind


def test_word_and_sentence_counts():
    assert words("It's a well-known fact: 3 cats, 2 dogs.") == [
        "It's", "a", "well-known", "fact", "3", "cats", "2", "dogs",
    ]  # fmt: skip
    assert count_sentences("One. Two? Three!! And four") == 4
    assert count_sentences("...") == 0


CONSTRAINTS = [
    {"kind": "lowercase"},
    {"kind": "no_commas"},
    {"kind": "words", "max": 4},
    {"kind": "ends_with", "phrase": "bye."},
]


def test_share_met_and_all_or_nothing():
    responses = [
        "ok then, bye.",  # lowercase, 3 words, ends right; a comma: 3 of 4
        "ok then bye.",  # all 4
        "Well, I Would Rather Not Say Anything",  # none
    ]
    columns = {"constraints": [CONSTRAINTS] * 3}
    share = ConstraintsReward(mode="share")(["p"] * 3, responses, columns)
    assert share == [0.75, 1.0, 0.0]
    assert ConstraintsReward(mode="all")(["p"] * 3, responses, columns) == [0.0, 1.0, 0.0]


def test_each_row_is_scored_against_its_own_constraints():
    columns = {"constraints": [[{"kind": "lowercase"}], json.dumps([{"kind": "uppercase"}])]}
    assert ConstraintsReward()(["p", "q"], ["HELLO", "HELLO"], columns) == [0.0, 1.0]


def test_the_spec_builds_the_scorer_and_names_its_column():
    cfg = load_config(
        "smollm2-constraints", ["reward.0.column=checks", "reward.0.mode=all", "reward.0.name=c"]
    )
    spec = cfg.reward[0]
    assert isinstance(spec, ConstraintsSpec) and spec.needs_columns() == {"checks"}
    scorer = build_scorer(spec, "reward.0")
    assert scorer.name == "c" and scorer.column == "checks" and scorer.mode == "all"
    assert scorer(["p"], ["yes"], {"checks": [[{"kind": "lowercase"}]]}) == [1.0]


def test_a_missing_column_is_one_line():
    with pytest.raises(RewardtuneError, match=r"reward.0: .* reads column 'checks'"):
        ConstraintsReward("checks", where="reward.0")(["p"], ["r"], {"constraints": [[]]})


@pytest.mark.parametrize(
    "value, message",
    [
        ([{"kind": "shouting"}], r"row 2 of data.jsonl: unknown constraint kind 'shouting'"),
        ([{"kind": "words"}], r"row 2 of .*: constraint 'words' needs min, max or count"),
        ([{"kind": "words", "max": "ten"}], r"constraint 'words' needs max to be a whole number"),
        ([{"kind": "words", "min": 9, "max": 3}], r"'words' has min 9 above max 3"),
        ([{"kind": "words", "count": 3, "max": 4}], r"'words' takes count, or min and/or max"),
        ([{"kind": "words", "most": 3}], r"'words' has unknown parameter 'most'"),
        ([{"kind": "ends_with"}], r"constraint 'ends_with' needs exactly one parameter, phrase"),
        ([{"kind": "ends_with", "phrase": ""}], r"'ends_with' needs phrase to be a non-empty"),
        ([{"kind": "include", "words": "water"}], r"'include' needs words to be a non-empty list"),
        ([{"kind": "lowercase", "strict": True}], r"'lowercase' takes no parameters, got strict"),
        ([{"words": ["a"]}], r'row 2 of .*: each constraint is a dict with a "kind"'),
        ([], r"row 2 of .*: expected a non-empty list"),
        ("[{kind: lowercase}]", r"row 2 of .*: not a JSON list of constraints"),
    ],
)
def test_malformed_constraints_name_the_row_and_the_kind(value, message):
    good = [{"kind": "lowercase"}]
    with pytest.raises(RewardtuneError, match=message):
        check_rows([good, value, good], "data.jsonl")


def check_rows(values: list, source: str) -> None:
    spec = ConstraintsSpec(type="constraints")
    for number, value in enumerate(values, 1):
        spec.check_column("constraints", value, f"'constraints' of row {number} of {source}")


def shipped_rows(name: str) -> list[dict]:
    path = resources.files("rewardtune.data") / "prompt_sets" / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_shipped_sets_are_valid_and_the_unseen_combinations_are_new():
    train, unseen = shipped_rows("constraints"), shipped_rows("constraints-unseen")
    assert len(train) >= 600 and len(unseen) >= 80
    for rows in (train, unseen):
        check_rows([r["constraints"] for r in rows], "the shipped set")
        assert len({r["text"] for r in rows}) == len(rows)
        assert all("\n" not in r["text"] for r in rows)

    def kinds(row):
        return frozenset(c["kind"] for c in row["constraints"])

    assert not {kinds(r) for r in unseen} & {kinds(r) for r in train}
    assert {k for r in unseen for k in kinds(r)} <= {k for r in train for k in kinds(r)}
    assert not {r["text"] for r in unseen} & {r["text"] for r in train}


def tiny_recipe_args(model: Path, source: str = "constraints") -> list[str]:
    """smollm2-constraints on the tiny llama: one step of one prompt x 4, 2 eval prompts x 2."""
    extra = {
        "data.source": source,
        "data.chat": "false",  # the tiny tokenizer has no chat template
        "eval.forms": "[plain]",
        "ppo.batch_size": 4,
        "ppo.mini_batch_size": 4,
        "ppo.samples_per_prompt": 4,
        "eval.samples_per_prompt": 2,
        "eval.batch_size": 4,
        "run.save_every": 0,
    }
    return set_args(tiny_overrides(model, Path(source), steps=1, **extra))


def scored_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_recipe_trains_and_scores_held_out_and_unseen_prompts(tmp_path, tiny_llama):
    run = tmp_path / "run"
    result = run_cli(
        "train", "smollm2-constraints", "--run-dir", str(run), *tiny_recipe_args(tiny_llama)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run / "eval.json").read_text())
    (unseen,) = summary["sections"]
    assert unseen["prompts"] == "constraints-unseen"
    rows = {r["text"]: r for r in shipped_rows("constraints") + shipped_rows("constraints-unseen")}
    for file in ("eval.jsonl", "eval_sections.jsonl"):
        for sample in scored_rows(run / file):  # each response scored against its own row
            row, after = rows[sample["prompt"]], sample["after"]
            found = constraints_met(parse_constraints(row["constraints"], "t"), after)
            on_topic = constraints_met(parse_constraints(row["on_topic"], "t"), after)
            scores = sample["scores_after"]
            assert scores["reward/constraints"] == scores["extra/constraints"]
            assert scores["extra/constraints"] == sum(found) / len(found)
            assert scores["extra/constraints_all"] == float(all(found))
            assert scores["extra/on_topic"] == float(all(on_topic))
            short = max(0, 8 - len(after.split()))  # the length term: -1/4 a word short of 8
            assert scores["reward/length"] == pytest.approx(-min(1.0, short / 4))
    better = {m["name"]: m["higher_is_better"] for m in unseen["summary"]["metrics"]}
    names = {"reward/total", "extra/constraints", "extra/constraints_all", "extra/on_topic"}
    assert names | {"extra/vader"} <= set(better)
    assert better["extra/constraints"] is better["extra/constraints_all"] is True  # a check met
    assert better["extra/vader"] is True


@pytest.mark.parametrize(
    "row, message",
    [
        (
            {"text": "Say hi.", "constraints": [{"kind": "shouting"}]},
            "'constraints' of row 2 of .*: unknown constraint kind 'shouting'",
        ),
        ({"text": "Say hi."}, "row 2 of .* has no column 'constraints'"),
    ],
)
def test_a_malformed_or_missing_constraint_is_one_line_and_exit_2(
    tmp_path, tiny_llama, row, message
):
    good = {"text": "Say hello to me.", "constraints": [{"kind": "lowercase"}]}
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [good, row] + [good] * 6))
    args = tiny_recipe_args(tiny_llama, str(data)) + set_args(
        ["eval.enabled=false", "eval.prompt_sets=[]"]
    )
    result = run_cli("train", "smollm2-constraints", "--run-dir", str(tmp_path / "run"), *args)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert re.search(message, last) and "Traceback" not in result.stderr, last
