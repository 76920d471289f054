"""Batched sampling and scoring of responses.

Sampling and scoring run in eval mode (no dropout, LoRA dropout included) under
``torch.inference_mode()``; the update runs in eval mode too, with gradients.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rewardtune.config import GenerationConfig
from rewardtune.core.tensors import pad_left, pad_right
from rewardtune.models import PolicyWithValueHead
from rewardtune.sampling.engines import (
    Decoded,
    Engine,
    HFEngine,
    Request,
    hf_generation_config,
    model_generation_defaults,
)
from rewardtune.sampling.fast import FastEngine, unsupported_reason
from rewardtune.types import Rollout, TokenBatch

log = logging.getLogger("rewardtune")


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """Temporarily switch dropout off; restores the previous mode afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@dataclass
class Generation:
    """Sampled responses with what the sampling forward passes already computed for each
    token: log pi_old (from the raw logits at the logprob temperature, before top-k/top-p) and
    V (from the last hidden state), None when not kept; and the seconds sampling took (0 when
    not measured)."""

    responses: list[torch.Tensor]  # each (len_i,)
    logprobs: list[torch.Tensor] | None = None  # each (len_i,)
    values: list[torch.Tensor] | None = None  # each (len_i,)
    seconds: float = 0.0


class Sampler:
    """Chooses the engine of each call (``gen.engine``, or hf where the fast engine cannot draw
    what generate draws) and holds the engines' state: the fast engine's CUDA graphs, and the
    warnings already given (each reason is logged once per sampler)."""

    def __init__(self, hf: HFEngine | None = None):
        self.hf = hf or HFEngine()
        self.fast = FastEngine(self.warn_once)
        self.warned: set[str] = set()

    def warn_once(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            log.warning(message)

    def engine_for(
        self, gen: GenerationConfig, lm: torch.nn.Module, seq2seq: bool, config
    ) -> Engine:
        if gen.engine == "hf":
            return self.hf
        reason = unsupported_reason(lm, seq2seq)
        if reason is None and (extra := model_generation_defaults(lm, config)):
            reason = f"when the model's generation_config sets {', '.join(extra)}"
        if reason is None:
            return self.fast
        self.warn_once(f"generation.engine=fast is not supported {reason}; using hf")
        return self.hf


def generate(
    lm: torch.nn.Module,
    queries: list[torch.Tensor],
    gen: GenerationConfig,
    pad_id: int,
    eos_ids: list[int],
    lengths: list[int] | None = None,
    seq2seq: bool = False,
    max_new_tokens: int | None = None,
    value_head: torch.nn.Module | None = None,
    sampler: Sampler | None = None,
    logprob_temperature: float = 1.0,
) -> Generation:
    """Sample one response per query, the whole batch at once, with ``gen.engine``
    (``sampler`` keeps engine state across calls; default: a fresh one).

    ``lengths`` caps each sample's response (classic per-sample LengthSampler): the batch
    is sampled to the longest and each response cut at its own length, which draws from
    the same distribution as sampling it alone. Everything after the first EOS is dropped
    (the EOS itself is kept: the policy chose to stop). With ``value_head``, the logprobs
    and values of the sampled tokens are kept from the sampling passes, so the update needs
    no second forward pass of the policy; ``logprob_temperature``: the temperature of those
    logprobs (``sampling_temperature`` for training, 1 for perplexity and KL in evaluation).
    """
    device = next(lm.parameters()).device
    longest = max(lengths) if lengths else (max_new_tokens or gen.max_new_tokens)
    input_ids = pad_left(queries, pad_id).to(device)
    attention_mask = pad_left([torch.ones_like(q) for q in queries], 0).to(device)
    keep = value_head is not None
    config = hf_generation_config(gen, longest, pad_id, eos_ids, keep)
    engine = (sampler or Sampler()).engine_for(gen, lm, seq2seq, config)
    request = Request(
        gen, config, longest, pad_id, eos_ids, seq2seq, value_head, logprob_temperature
    )
    heads = eval_mode(value_head) if keep else contextlib.nullcontext()
    with eval_mode(lm), heads, torch.inference_mode():
        decoded = engine.sample(lm, input_ids, attention_mask, request)
    return _cut(decoded, lengths, longest, eos_ids)


def _cut(
    decoded: Decoded, lengths: list[int] | None, longest: int, eos_ids: list[int]
) -> Generation:
    """Each row up to its first EOS (kept) and at most its own length."""
    keep = decoded.logprobs is not None
    sampled = Generation([], [] if keep else None, [] if keep else None)
    # one copy to the host per tensor, not one per row: each copy waits for the GPU
    logprobs, values = (decoded.logprobs.cpu(), decoded.values.cpu()) if keep else (None, None)
    for i, row in enumerate(decoded.tokens.cpu()):
        limit = lengths[i] if lengths else longest
        n = end_of_response(row[:limit], eos_ids)
        sampled.responses.append(row[:n].clone())
        if keep:
            sampled.logprobs.append(logprobs[i, :n].clone())
            sampled.values.append(values[i, :n].clone())
    return sampled


def end_of_response(tokens: torch.Tensor, eos_ids: list[int]) -> int:
    """Length of the response: up to and including the first EOS, else all of it."""
    is_eos = torch.isin(tokens, torch.tensor(eos_ids, dtype=tokens.dtype))
    hits = is_eos.nonzero()
    return int(hits[0, 0]) + 1 if len(hits) else len(tokens)


def collate(
    queries: list[torch.Tensor], responses: list[torch.Tensor], pad_id: int, device
) -> TokenBatch:
    """Left-padded queries and right-padded responses with their masks, on ``device``."""
    return TokenBatch(
        query_ids=pad_left(queries, pad_id).to(device),
        query_mask=pad_left([torch.ones_like(q) for q in queries], 0).to(device),
        response_ids=pad_right(responses, pad_id).to(device),
        response_mask=pad_right([torch.ones_like(r) for r in responses], 0).to(device),
    )


def score(
    module: PolicyWithValueHead,
    reference: Callable[[], contextlib.AbstractContextManager],
    queries: list[torch.Tensor],
    responses: list[torch.Tensor],
    pad_id: int,
    chunk_size: int,
    sampled: Generation | None = None,
    temperature: float = 1.0,
) -> Rollout:
    """Old logprobs, values and reference logprobs of given responses, in batched forwards,
    the logprobs of both at ``temperature`` (that of ``sampled``'s, when given).

    When ``sampled`` carries the policy's logprobs and values from sampling, only the
    reference runs a forward pass.
    """
    device = next(module.parameters()).device
    batch = collate(queries, responses, pad_id, device)
    width = batch.response_ids.shape[1]
    logprobs, values, ref_logprobs = [], [], []
    with eval_mode(module), torch.inference_mode():
        for start in range(0, len(queries), chunk_size):
            chunk = batch.index(slice(start, start + chunk_size)).trim()
            if sampled is None:
                chunk_logprobs, chunk_values = module(
                    **chunk.inputs(), return_logprobs=True, temperature=temperature
                )
                logprobs.append(_pad_to(chunk_logprobs, width))
                values.append(_pad_to(chunk_values.float(), width))
            with reference() as ref_lm:
                ref = reference_logprobs(module, ref_lm, chunk, temperature)
                ref_logprobs.append(_pad_to(ref, width))
    mask = batch.response_mask
    if sampled is not None:
        logprobs = [pad_right(sampled.logprobs, 0.0).to(device)]
        values = [pad_right(sampled.values, 0.0).to(device)]
    return Rollout(
        **batch.inputs(),
        logprobs=torch.cat(logprobs) * mask,
        ref_logprobs=torch.cat(ref_logprobs) * mask,
        values=torch.cat(values) * mask,
    )


def reference_logprobs(
    module: PolicyWithValueHead, ref_lm: torch.nn.Module, chunk: TokenBatch, temperature=1.0
) -> torch.Tensor:
    """log pi_ref of the response tokens (same alignment as the policy's) at ``temperature``,
    (B, R): ``ref_lm`` is the policy's own LM with its adapter disabled, or the frozen copy."""
    logprobs, _ = module(
        **chunk.inputs(),
        with_values=False,
        lm=ref_lm,
        return_logprobs=True,
        temperature=temperature,
    )
    return logprobs


def sampling_temperature(gen: GenerationConfig) -> float:
    """The temperature of the distribution training samples from, and so of the logprobs its
    ratio and KL use (as TRL's GRPOTrainer, OpenRLHF and veRL do): ``gen.temperature`` when
    sampling, 1 when decoding greedily. top-k/top-p are not applied to the logprobs."""
    return gen.temperature if gen.do_sample else 1.0


def _pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))
