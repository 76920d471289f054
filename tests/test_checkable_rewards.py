"""The checks against the data (issue 21): match, format, length and rouge, on written-out
cases including near misses."""

from __future__ import annotations

import pytest

from rewardtune.config import Config, RewardtuneError, load_config
from rewardtune.data.columns import needed_columns
from rewardtune.rewards import build_reward
from rewardtune.rewards.length import LengthReward, length_penalty
from rewardtune.rewards.match import extract_answer


def scores(spec: dict, responses: list[str], prompts: list[str] | None = None, **columns):
    reward = build_reward(Config(reward=[spec], eval={"enabled": False}).reward)
    return reward(prompts or ["p"] * len(responses), responses, columns)


@pytest.mark.parametrize(
    ("response", "extract", "answer"),
    [
        ("so 3 + 4 = 7, and 7 * 2 = 14", "last_number", "14"),
        ("it costs $1,234.50 in total.", "last_number", "1,234.50"),
        ("minus: -3", "last_number", "-3"),
        ("no digits here", "last_number", None),
        (r"thus \boxed{\frac{1}{2}} and not \boxed{3}", "boxed", "3"),
        (r"answer \boxed{\frac{1}{2}}", "boxed", r"\frac{1}{2}"),
        (r"open \boxed{12", "boxed", None),
        ("Answer: Paris. FINAL ANSWER: Rome", "regex:answer: (\\w+)", None),  # case matters
        ("Answer: Paris. Final Answer: Rome", "regex:Answer: (\\w+)", "Rome"),
        ("  Paris \n", "full", "Paris"),
        ("   ", "full", None),
    ],
)
def test_match_extracts_the_answer(response, extract, answer):
    assert extract_answer(response, extract) == answer


def test_match_compares_normalised_and_exact_with_near_misses():
    responses = ["The answer is 42.", "The answer is 42.0001", "I think 41", "no idea", "= 42.0"]
    assert scores({"type": "match"}, responses, answer=["42"] * 5) == [1, 0, 0, 0, 1]
    loose = {"type": "match", "tolerance": 0.001}
    assert scores(loose, responses, answer=[42] * 5) == [1, 1, 0, 0, 1]
    credit = {"type": "match", "format_credit": 0.1}
    assert scores(credit, responses, answer=["42"] * 5) == [1, 0.1, 0.1, 0, 1]
    words = {"type": "match", "extract": "full", "column": "city"}
    got = scores(
        words,
        ["  paris ", "Paris", "Paris.", "Pariss", "New  York"],
        city=["Paris"] * 4 + ["new york"],
    )
    assert got == [1, 1, 1, 0, 1]
    exact = words | {"compare": "exact"}
    got = scores(exact, ["  Paris ", "paris", "Paris."], city=["Paris"] * 3)
    assert got == [1, 0, 0]
    assert scores(words, ["rome", "oslo"], city=[["Rome", "Roma"], ["Bergen"]]) == [1, 0]


def test_match_refuses_a_bad_pattern_and_reports_a_missing_column():
    with pytest.raises(
        RewardtuneError, match="reward.0.extract: 'regex:\\(' : not a regular|extract"
    ):
        load_config(None, ["reward=[{type: match, extract: 'regex:('}]"])
    with pytest.raises(RewardtuneError, match="no column 'answer'"):
        scores({"type": "match"}, ["1"], other=["1"])


def test_format_matches_full_or_search():
    spec = {"type": "format", "pattern": r"<think>.*</think>\s*<answer>.*</answer>"}
    good = "<think>a\nb</think>\n<answer>4</answer>\n"
    near = "<think>a</think><answer>4</answer> trailing"
    assert scores(spec, [good, near, "<answer>4</answer>"]) == [1, 0, 0]
    search = spec | {"pattern": r"<answer>\d+</answer>", "mode": "search"}
    assert scores(search, [good, near, "<answer>four</answer>"]) == [1, 1, 0]


def test_length_penalty_is_zero_inside_and_linear_outside():
    # range [4, 8], margin 4: 2 words short is -0.5, 9 words is -0.25, 20 is -1
    assert [length_penalty(n, 4, 8, 4) for n in (4, 6, 8, 2, 9, 12, 20, 0)] == [
        0,
        0,
        0,
        -0.5,
        -0.25,
        -1,
        -1,
        -1,
    ]
    spec = {"type": "length", "min": 2, "max": 3, "margin": 2}
    assert scores(spec, ["one two", "one two three four", "a b c d e f", "one"]) == [
        0,
        -0.5,
        -1,
        -0.5,
    ]


def test_length_counts_tokens_with_the_given_tokenizer(tiny_llama):
    reward = LengthReward(0, 3, 3)
    spec = {"type": "length", "unit": "tokens", "max": 3, "margin": 3, "tokenizer": str(tiny_llama)}
    counted = build_reward(Config(reward=[spec], eval={"enabled": False}).reward).terms[0][0]
    text = "hello world hello world"
    n_tokens = counted.count([text])[0]
    assert n_tokens != len(text.split())  # the byte-level tokenizer splits differently
    assert counted(["p"], [text]) == [length_penalty(n_tokens, 0, 3, 3)]
    assert reward(["p"], [text]) == [length_penalty(4, 0, 3, 3)]
    with pytest.raises(RewardtuneError, match="unit tokens needs tokenizer"):
        load_config(None, ["reward=[{type: length, unit: tokens, max: 5, margin: 2}]"])


def test_rouge_scores_f1_against_the_reference_column():
    spec = {"type": "rouge", "column": "summary"}
    ref = "the cat sat on the mat"
    got = scores(
        spec, [ref, "the cat sat", "a dog ran far", "The cats sat on the mat."], summary=[ref] * 4
    )
    # ROUGE-L: LCS 3 of 3 response and 6 reference words -> P=1, R=0.5, F1=2/3; stemming
    # makes "cats" "cat"; no shared word -> 0
    assert got == pytest.approx([1.0, 2 / 3, 0.0, 1.0])
    bigram = spec | {"variant": "rouge2"}
    assert scores(bigram, ["the cat sat"], summary=[ref]) == pytest.approx([2 * 1 * 0.4 / 1.4])


def test_repetition_penalises_loops_and_with_prompt_echoes():
    spec = {"type": "repetition", "n": 3}
    # 6 words, 4 trigrams: "a b c" comes back once -> -1/4; under 3 words there is no trigram
    assert scores(spec, ["a b c a b c", "A b C d e f", "In short: in short: in short", "a b"]) == [
        -0.25,
        0,
        -0.5,  # in short in / short in short / in short in / short in short: 2 of 4 repeat
        0,
    ]
    prompt = 'How do I charge a phone? Use the word "charger" in your answer.'
    echo = "Do not use the word charger in your answer."  # 6 4-grams, the last 4 in the prompt
    answer = "Plug the charger in overnight and unplug it once it is full."
    echoing = {"type": "repetition", "prompt": True}
    assert scores(echoing, [echo, answer], [prompt] * 2) == pytest.approx([-4 / 6, 0])
    assert scores({"type": "repetition"}, [echo]) == [0]  # prompt: false reads no prompt
    # near miss: copying a 4-word phrase the prompt asks for is no 5-gram of it
    starts = 'How do I water a plant? Start your answer with "Here is my advice".'
    five = {"type": "repetition", "n": 5, "prompt": True}
    assert scores(five, ["Here is my advice: water it weekly.", starts], [starts] * 2) == [0, -1]


def test_each_check_says_which_column_it_reads():
    cfg = Config(
        reward=[{"type": "match", "column": "gold"}, {"type": "format", "pattern": "x"}],
        eval={"extra_scorers": [{"type": "rouge", "column": "ref"}]},
    )
    assert {name: need.reader for name, need in needed_columns(cfg).items()} == {
        "gold": "reward.0 (match)",
        "ref": "eval.extra_scorers.0 (rouge)",
    }
    cfg.eval.enabled = False  # no evaluation runs, so none of its scorers needs a column
    assert list(needed_columns(cfg)) == ["gold"]
