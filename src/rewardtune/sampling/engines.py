"""Sampling engines: what every engine returns (``Decoded``) and the ``hf`` engine, which is
``model.generate`` with a config that pins every field that could change the distribution.
The ``fast`` engine is in ``sampling/fast.py``; ``rollout.Sampler`` chooses between them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from rewardtune.config import GenerationConfig
from rewardtune.core.tensors import logprobs_from_logits
from rewardtune.models.hub import base_model


@dataclass
class Decoded:
    """New tokens of a batch, pad after each row's EOS, with what sampling computed for them."""

    tokens: torch.Tensor  # (B, T), T <= max_new_tokens
    logprobs: torch.Tensor | None = None  # (B, T) log pi(token), Request.logprob_temperature
    values: torch.Tensor | None = None  # (B, T) V(last hidden state before the token)


def hf_generation_config(
    gen: GenerationConfig,
    max_new_tokens: int,
    pad_id: int,
    eos_ids: list[int],
    keep_scores: bool = False,
):
    """A fresh GenerationConfig: the model's own defaults (top_k=50, repetition penalty...)
    must not change the distribution PPO thinks it samples from. generate() fills every field
    left None from the model's generation_config, so those with a neutral value are pinned to
    it (the rest: ``model_generation_defaults``)."""
    from transformers import GenerationConfig as HFGenerationConfig

    return HFGenerationConfig(
        num_beams=1,
        num_return_sequences=1,
        repetition_penalty=1.0,
        encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        encoder_no_repeat_ngram_size=0,
        typical_p=1.0,
        epsilon_cutoff=0.0,
        eta_cutoff=0.0,
        guidance_scale=1.0,
        renormalize_logits=False,
        remove_invalid_values=False,
        max_new_tokens=max_new_tokens,
        min_new_tokens=min(gen.min_new_tokens, max_new_tokens),
        do_sample=gen.do_sample,
        top_k=gen.top_k if gen.do_sample else None,
        top_p=gen.top_p if gen.do_sample else None,
        temperature=gen.temperature if gen.do_sample else None,
        pad_token_id=pad_id,
        eos_token_id=eos_ids,
        return_dict_in_generate=True,
        output_logits=keep_scores,
        output_hidden_states=keep_scores,
    )


# generation_config fields a model may set that cannot change what generate() samples for
# hf_generation_config: token ids, lengths, cache and output switches, and the warpers (applied
# only when sampling, and then set by us)
_HARMLESS_MODEL_DEFAULTS = frozenset(
    {
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
        "decoder_start_token_id",
        "max_length",
        "min_length",
        "use_cache",
        "cache_implementation",
        "cache_config",
        "output_attentions",
        "output_hidden_states",
        "output_scores",
        "output_logits",
        "return_dict_in_generate",
        "temperature",
        "top_k",
        "top_p",
        "length_penalty",
        "early_stopping",
        "transformers_version",
        "_from_model_config",
    }
)


def model_generation_defaults(lm: torch.nn.Module, config) -> list[str]:
    """Fields of the model's own generation_config that generate() would add to ``config``
    (bad_words_ids, suppress_tokens, min_p...): only the hf engine applies them."""
    own = base_model(lm).generation_config.to_dict()
    return sorted(
        key
        for key, value in own.items()
        if value is not None
        and key not in _HARMLESS_MODEL_DEFAULTS
        and getattr(config, key, None) is None
    )


@dataclass
class Request:
    """What one batch is sampled with: the recipe's settings, the transformers config built
    from them, the length, the special tokens, the value head whose values to keep, and the
    temperature of the logprobs kept with them (softmax(raw logits / T), before top-k/top-p)."""

    gen: GenerationConfig
    config: object  # transformers.GenerationConfig from ``hf_generation_config``
    max_new_tokens: int
    pad_id: int
    eos_ids: list[int]
    seq2seq: bool = False
    value_head: torch.nn.Module | None = None
    logprob_temperature: float = 1.0


class Engine(Protocol):
    """A sampler of new tokens for a left-padded batch (``hf``, ``fast``)."""

    name: str

    def sample(self, lm, input_ids, attention_mask, request: Request) -> Decoded: ...


class HFEngine:
    """``generation.engine: hf``: ``model.generate`` itself (``streamer`` prints tokens as they
    come, for ``rewardtune generate``)."""

    name = "hf"

    def __init__(self, streamer=None):
        self.streamer = streamer

    def sample(self, lm, input_ids, attention_mask, request: Request) -> Decoded:
        output = lm.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            generation_config=request.config,
            streamer=self.streamer,
        )
        start = 1 if request.seq2seq else input_ids.shape[1]
        new_tokens = output.sequences[:, start:]
        if request.value_head is None:
            return Decoded(new_tokens)
        scores = _sampling_scores(output, new_tokens, request)
        return Decoded(new_tokens, *scores)


def _sampling_scores(output, new_tokens: torch.Tensor, request: Request):
    """(B, T) logprobs of the sampled tokens under the raw logits at
    ``request.logprob_temperature``, and (B, T) values."""
    logits = torch.stack(output.logits, dim=1)  # (B, T, V), before any logits processor
    logprobs = logprobs_from_logits(logits, new_tokens, request.logprob_temperature)
    steps = output.decoder_hidden_states if request.seq2seq else output.hidden_states
    hidden = torch.stack([layers[-1][:, -1] for layers in steps], dim=1)  # (B, T, H)
    return logprobs, request.value_head(hidden).float()
