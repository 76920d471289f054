"""``repetition``: a penalty for the word n-grams a response repeats: those it already said
(a loop) and, with ``prompt: true``, those it copies from its prompt (an echo).

The repetition penalty of open-r1's GRPO recipes (the share of a response's n-grams that are not
new), extended to the prompt: a check that reads only the response cannot tell an answer from a
copy of the request's instructions (`Use the word "charger" in your answer.` meets "use the word
charger"). The score is ``-repeated / n-grams``, in [-1, 0]; 0 for a response under ``n`` words.
Words as the ``constraints`` checks count them, ignoring case.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from rewardtune.rewards.constraints import words
from rewardtune.rewards.registry import RewardBase, reward_type
from rewardtune.text import word_ngrams


@reward_type
class RepetitionSpec(RewardBase):
    type: Literal["repetition"]
    higher_is_better: ClassVar = True
    n: int = Field(4, ge=1)  # words per n-gram
    prompt: bool = False  # an n-gram of the prompt counts as said already (an echo)

    summary: ClassVar = ("n", "prompt")

    def scorer(self, where: str) -> RepetitionReward:
        return RepetitionReward(self.n, self.prompt)


def ngrams(text: str, n: int) -> list[tuple[str, ...]]:
    """The word n-grams of ``text`` in order, lowercased."""
    return word_ngrams([w.lower() for w in words(text)], n)


def repeated_share(response: str, n: int, prompt: str = "") -> float:
    """The share of the response's n-grams that appeared before: earlier in the response, or
    anywhere in ``prompt``; 0 for a response under ``n`` words."""
    grams = ngrams(response, n)
    if not grams:
        return 0.0
    seen = set(ngrams(prompt, n))
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


class RepetitionReward:
    """``-repeated_share`` of each response (against its prompt too when ``prompt``)."""

    def __init__(self, n: int = 4, prompt: bool = False):
        self.n, self.prompt = n, prompt
        self.name = "repetition"

    def __call__(
        self, prompts: list[str], responses: list[str], columns: dict | None = None
    ) -> list[float]:
        sources = prompts if self.prompt else [""] * len(responses)
        return [0.0 - repeated_share(r, self.n, p) for p, r in zip(sources, responses, strict=True)]
