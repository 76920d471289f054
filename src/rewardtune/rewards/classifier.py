"""A text classifier as reward: any AutoModelForSequenceClassification with its own tokenizer."""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import torch
from pydantic import Field

from rewardtune.rewards.base import join
from rewardtune.rewards.registry import Input, RewardBase, ToxicityBase, reward_type, toxicity_type
from rewardtune.types import RewardtuneError

log = logging.getLogger("rewardtune")


@reward_type
class ClassifierSpec(RewardBase):
    type: Literal["classifier"]
    input: Input = "prompt+response"
    model: str
    label: str
    output: Literal["logit", "prob", "logprob"] = "logit"
    batch_size: int = Field(32, gt=0)

    summary: ClassVar = ("model", "label", "output")

    def scorer(self, where: str) -> ClassifierScorer:
        return ClassifierScorer.from_spec(self, where)


@toxicity_type
class ClassifierToxicitySpec(ToxicityBase):
    """P(label) under a text classifier, e.g. ``hate`` of the RoBERTa hate-speech model."""

    type: Literal["classifier"]
    model: str
    label: str
    input: Input = "response"
    batch_size: int = Field(32, gt=0)

    def scorer(self, where: str) -> ClassifierScorer:
        return ClassifierScorer.from_spec(self, where, output="prob")


def load_classifier(model_name: str, device: str | torch.device | None = None):
    """(model, tokenizer) of a sequence classifier, in eval mode on ``device``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name)
        # no hub kernels (remote code), as models.hub.load_base_model
        model = AutoModelForSequenceClassification.from_pretrained(model_name, use_kernels=False)
    except (OSError, ValueError) as err:
        raise RewardtuneError(
            f"cannot load classifier {model_name!r}: {str(err).splitlines()[0][:200]} "
            "(check the name or path; hub ids need network access)"
        ) from err
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


def label_index(model, label: str, where: str) -> int:
    """The class index of ``label`` by name, never by position."""
    id2label = {int(i): name for i, name in model.config.id2label.items()}
    for index, name in id2label.items():
        if name == label:
            return index
    for index, name in id2label.items():  # tolerate case: "positive" for "POSITIVE"
        if name.lower() == label.lower():
            return index
    raise RewardtuneError(
        f"{where}: label {label!r} is not a class of {model.name_or_path}; its labels are "
        f"{', '.join(repr(n) for n in id2label.values())}"
    )


class ClassifierScorer:
    """logit / prob / logprob of one class, batched and truncated to the classifier's length."""

    def __init__(
        self, model, tokenizer, label: str, output: str, input: str, batch_size: int, where: str
    ):
        self.model, self.tokenizer = model, tokenizer
        self.index = label_index(model, label, where)
        self.output, self.input, self.batch_size = output, input, batch_size
        self.name = f"classifier:{label}"
        limit = getattr(tokenizer, "model_max_length", 512)
        positions = getattr(model.config, "max_position_embeddings", limit)
        self.max_length = min(limit if limit < 1e6 else 512, positions)
        self._warned = False

    @classmethod
    def from_spec(cls, spec, where: str, output: str | None = None, label: str | None = None):
        model, tokenizer = load_classifier(spec.model)
        return cls(
            model,
            tokenizer,
            label or spec.label,
            output or getattr(spec, "output", "prob"),
            spec.input,
            spec.batch_size,
            where,
        )

    @torch.inference_mode()
    def __call__(
        self, prompts: list[str], responses: list[str], columns: dict | None = None
    ) -> list[float]:
        device = self.model.device
        texts = join(prompts, responses, self.input, columns)
        out = []
        for start in range(0, len(responses), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            enc = self._encode(texts[chunk], responses[chunk]).to(device)
            logits = self.model(**enc).logits.float()
            if self.output == "logit":
                picked = logits[:, self.index]
            elif self.output == "prob":
                picked = torch.softmax(logits, -1)[:, self.index]
            else:
                picked = torch.log_softmax(logits, -1)[:, self.index]
            out.extend(picked.cpu().tolist())
        return out

    def _encode(self, texts: list[str], responses: list[str]):
        """At most ``max_length`` tokens. prompt+response (or a template) is cut from the
        left: the prompt's start goes first, so the response, the part being optimised, stays
        whole unless it alone is too long (warned once); a response read alone is cut from
        the right."""
        self._warn_if_too_long(responses)
        self.tokenizer.truncation_side = "right" if self.input == "response" else "left"
        return self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )

    def _warn_if_too_long(self, responses: list[str]) -> None:
        if self._warned:
            return
        room = self.max_length - self.tokenizer.num_special_tokens_to_add()
        ids = self.tokenizer(list(responses), add_special_tokens=False)["input_ids"]
        longest = max((len(i) for i in ids), default=0)
        if longest > room:
            self._warned = True
            log.warning(
                "%s: a response of %d tokens is longer than the classifier reads (%d); it is "
                "cut (%s)",
                self.name,
                longest,
                room,
                "its end is dropped" if self.input == "response" else "its start is dropped",
            )
