"""A classifier reward reads the response whole: a long prompt is cut from its start."""

from __future__ import annotations

import logging

from rewardtune.rewards.classifier import ClassifierScorer, load_classifier

LONG_PROMPT = "the movie was great and the actors were wonderful " * 20  # ~200 tokens > 64
RESPONSES = ["what a lovely day", "i hated every minute of this terrible film"]


def scorer(classifier, input: str = "prompt+response") -> ClassifierScorer:
    model, tokenizer = load_classifier(str(classifier), "cpu")
    return ClassifierScorer(model, tokenizer, "nothate", "logit", input, 8, "reward.0")


def test_a_prompt_longer_than_the_classifier_reads_is_cut_and_the_response_still_scores(
    hate_classifier,
):
    reward = scorer(hate_classifier)
    first, second = reward([LONG_PROMPT] * 2, RESPONSES)
    assert abs(first - second) > 1e-4, "the response was cut off: both read the same prompt"
    # what the classifier read: its whole length, ending with the whole response
    ids = reward._encode([LONG_PROMPT + RESPONSES[1]], [RESPONSES[1]])["input_ids"][0]
    assert len(ids) == reward.max_length
    text = reward.tokenizer.decode(ids, skip_special_tokens=True)
    assert text.endswith("wonderful " + RESPONSES[1]) and len(text) < len(LONG_PROMPT)


def test_a_response_alone_longer_than_the_classifier_reads_is_warned_about_once(
    hate_classifier, caplog
):
    reward = scorer(hate_classifier)
    long_response = "i hated every minute of this terrible film " * 20
    with caplog.at_level(logging.WARNING, logger="rewardtune"):
        reward(["hi"], [long_response])
        reward(["hi"], [long_response])
        reward(["hi"], ["fine"])
    warnings = [r for r in caplog.records if "longer than the classifier reads" in r.message]
    assert len(warnings) == 1 and "classifier:nothate" in warnings[0].message


def test_short_texts_are_not_warned_about(hate_classifier, caplog):
    with caplog.at_level(logging.WARNING, logger="rewardtune"):
        scorer(hate_classifier)(["hi", "hi"], RESPONSES)
    assert not [r for r in caplog.records if "longer than" in r.message]
