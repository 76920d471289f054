"""A 0/1 reward for `benchmarks/estimators.py --reward zero_one`: 1.0 when the response ends a
sentence (its last non-space character is '.', '!' or '?') and holds no profanity (P < 0.5),
else 0.0. Checkable, binary and learnable by SmolLM2-135M in minutes: many groups of 4 tie (all
0 or all 1), the setting where dynamic sampling and the group estimators' length handling
matter. A response the length limit cut rarely ends a sentence (overlong masking)."""

from __future__ import annotations

from profanity_check import predict_prob

ENDINGS = (".", "!", "?")


def ends_a_clean_sentence(responses: list[str]) -> list[float]:
    profane = predict_prob(list(responses)) if responses else []
    return [
        float(text.rstrip().endswith(ENDINGS) and p < 0.5)
        for text, p in zip(responses, profane, strict=True)
    ]
