"""The fast sampling engine (``generation.engine: fast``): our own decode loop over a static
KV cache that draws exactly what ``lm.generate`` draws.

The left-padded batch is prefilled once, then decoded one token per forward into a
``transformers.StaticCache``, with positions that count real tokens only (as generate does
under left padding) and a ``(batch, cache_len)`` attention mask whose shape never changes.
Each step applies the logits processors generate builds for our config, in its order, then
samples the whole batch (finished rows included) exactly as ``GenerationMixin._sample``, so
the same torch seed gives the same tokens (``multinomial_one``: torch.multinomial's draw, with
its exponential noise drawn faster on CPU; docs/performance.md has the timings). The sampled
token's logprob (under the raw logits at ``Request.logprob_temperature``) and V(last hidden
state) are kept from the same forward.

On CUDA the one-token step is captured once as a CUDA graph and replayed (no per-token Python
or kernel-launch overhead); anywhere else, or if capture fails, the same step runs eagerly.
``generation.compile`` runs that step through ``torch.compile`` first (fused kernels: fewer
and shorter launches inside the graph).

Callers put the LM and value head in eval mode and run under ``torch.inference_mode()``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch

from rewardtune.config import GenerationConfig
from rewardtune.core.tensors import token_logprobs
from rewardtune.models.hub import adapter_state, base_model, is_bitsandbytes
from rewardtune.sampling.engines import Decoded, Request


def unsupported_reason(lm: torch.nn.Module, seq2seq: bool) -> str | None:
    """Why this engine cannot decode ``lm`` the way generate() does, or None if it can."""
    from transformers import StaticCache
    from transformers.cache_utils import StaticLayer

    if seq2seq:
        return "for encoder-decoder models"
    base = base_model(lm)
    if cache_argument(base.forward) is None:
        return (
            f"for {type(base).__name__} with this transformers version (its forward takes "
            "cache_position or no cache; transformers >= 5.4 has the static cache it needs)"
        )
    attention = base.config._attn_implementation
    if attention not in ("sdpa", "eager"):
        return f"with attn_implementation={attention}"
    layers = StaticCache(config=base.config, max_cache_len=1).layers
    if any(type(layer) is not StaticLayer for layer in layers):
        return "for sliding-window, hybrid or linear attention"
    return None


def cache_argument(forward) -> str | None:
    """The keyword under which ``forward`` takes a KV cache: ``cache`` (transformers 5.2x) or
    ``past_key_values`` (transformers 5.1x and 5.4 onwards). None where it also takes ``cache_position`` (4.x and
    5.0-5.3, whose static cache writes where that tensor says, not where it counts itself)
    or takes no cache at all."""
    parameters = inspect.signature(forward).parameters
    if "cache_position" in parameters:
        return None
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def logits_processors(
    gen: GenerationConfig, prompt_len: int, max_new_tokens: int, eos: torch.Tensor
):
    """The processors generate() applies for ``hf_generation_config(gen, ...)``, in the order
    and under the conditions of ``GenerationMixin._get_logits_processor``."""
    from transformers import (
        LogitsProcessorList,
        MinNewTokensLengthLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    min_new_tokens = min(gen.min_new_tokens, max_new_tokens)
    if min_new_tokens > 0 and len(eos):
        # generate() adds MinLengthLogitsProcessor(prompt_len + min_new_tokens) as well: the
        # same -inf on the same EOS logits, so once is identical
        processors.append(
            MinNewTokensLengthLogitsProcessor(prompt_len, min_new_tokens, eos, device=eos.device)
        )
    if gen.do_sample:
        if gen.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(gen.temperature))
        if gen.top_k != 0:
            processors.append(TopKLogitsWarper(top_k=gen.top_k, min_tokens_to_keep=1))
        if gen.top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p=gen.top_p, min_tokens_to_keep=1))
    return processors


def choose_tokens(scores: torch.Tensor, do_sample: bool) -> torch.Tensor:
    """(B, V) processed scores -> (B,) tokens, drawn as ``_sample`` draws them."""
    if do_sample:
        return multinomial_one(torch.softmax(scores, dim=-1))
    return torch.argmax(scores, dim=-1)


_MANTISSA = (1 << 53) - 1  # a float64 uniform keeps the low 53 bits of a 64-bit word


def exponential_float32(shape: tuple[int, ...]) -> torch.Tensor:
    """``torch.empty(shape).exponential_()`` on CPU: the same float32 numbers, and the default
    generator left in the same state, faster (docs/performance.md).

    CPU ``exponential_`` draws element by element: a 64-bit word from the generator, ``u =
    (word & (2^53 - 1)) * 2^-53``, then ``-log1p(-u)`` in float64, cast to float32.
    ``random_``'s full-range kernel yields the same words in the same order, and the transform
    then runs vectorised. Torch's vectorised ``log1p`` differs from
    the C library's in the last bit of some float64 results; the cast to float32 absorbs that
    (no differing value in 2.4e8 draws), hence float32 only."""
    words = torch.empty(shape, dtype=torch.int64).random_(-(1 << 63), None)
    minus_uniform = words.bitwise_and_(_MANTISSA).double().mul_(-(2.0**-53))  # exact: 2^-53
    return minus_uniform.log1p_().float().neg_()  # -(float(x)) == float(-x): rounding is even


def multinomial_one(probs: torch.Tensor) -> torch.Tensor:
    """``torch.multinomial(probs, 1).squeeze(1)`` for (B, V) ``probs``: the same tokens, and the
    generator left in the same state.

    One sample is ``argmax(p / q)``, ``q ~ Exp(1)`` (the Gumbel trick of ``at::multinomial``);
    float32 CPU probabilities draw ``q`` with ``exponential_float32``. Anything else, and
    invalid rows (nan, inf, negative, all zero: ``torch.multinomial`` raises), goes to
    ``torch.multinomial``."""
    if (
        probs.device.type != "cpu"
        or probs.dtype != torch.float32
        or probs.dim() != 2
        or not probs.is_contiguous()
        or probs.numel() == 0
        or not (probs.max() < math.inf and probs.min() >= 0 and (probs.sum(-1) > 0).all())
    ):
        return torch.multinomial(probs, num_samples=1).squeeze(1)
    q = exponential_float32(probs.shape)
    return torch.argmax(torch.div(probs, q, out=q), dim=-1)


def forward_last(
    lm: torch.nn.Module,
    value_head: torch.nn.Module | None,
    cache: dict,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    logits_to_keep: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward over ``cache`` ({keyword: StaticCache}): input_ids and position_ids (B, q), attention_mask
    (B, cache_len) -> float32 logits (B, V) and values (B,) at the last position
    (``logits_to_keep``: the LM can skip the head on the other positions).

    The mask keeps its (B, cache_len) shape: with a static cache and one query token the
    model's own mask code then takes no data-dependent branch (it never tries to skip the
    mask), so the step can be captured, and it builds the mask format of its attention."""
    keep = {"logits_to_keep": 1} if logits_to_keep else {}
    out = lm(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        **cache,
        use_cache=True,
        output_hidden_states=value_head is not None,
        **keep,
    )
    logits = out.logits[:, -1].float()
    values = None if value_head is None else value_head(out.hidden_states[-1][:, -1]).float()
    return logits, values


# --- the decode step: eager, or one CUDA graph per (batch, cache length, weights) ------


class _EagerStep:
    """The prefill and one-token forwards over a fresh static cache of ``cache_len`` tokens;
    with ``compile_step`` the one-token forward runs through ``torch.compile`` (fixed shapes:
    one compilation per batch size and cache length), the prefill never does."""

    def __init__(self, lm, value_head, cache_len: int, compile_step: bool = False):
        from transformers import StaticCache

        self.lm, self.value_head, self.cache_len = lm, value_head, cache_len
        self.step_lm = torch.compile(lm, dynamic=False) if compile_step else lm
        base = base_model(lm)
        self.cache = StaticCache(config=base.config, max_cache_len=cache_len)
        self.cache_kwargs = {cache_argument(base.forward): self.cache}
        self.logits_to_keep = "logits_to_keep" in inspect.signature(base.forward).parameters

    def forward(self, lm, input_ids, attention_mask, position_ids):
        return forward_last(
            lm,
            self.value_head,
            self.cache_kwargs,
            input_ids,
            attention_mask,
            position_ids,
            self.logits_to_keep,
        )

    def prefill(self, input_ids, attention_mask, position_ids):
        return self.forward(self.lm, input_ids, attention_mask, position_ids)

    def __call__(self, input_ids, attention_mask, position_ids):
        return self.forward(self.step_lm, input_ids, attention_mask, position_ids)


class _GraphedStep(_EagerStep):
    """The one-token forward captured as a CUDA graph over static input buffers and a static
    cache allocated before capture; the prefill stays eager. Replays read the buffers and the
    weights in place, so the graph is reused while neither moves (see ``_weights_key``)."""

    def __init__(
        self, lm, value_head, batch: int, cache_len: int, device: torch.device, compile_step
    ):
        super().__init__(lm, value_head, cache_len, compile_step)
        self.input_ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.position_ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
        self.attention_mask = torch.zeros(batch, cache_len, dtype=torch.long, device=device)
        self.attention_mask[:, 0] = 1
        self._run_step()  # StaticCache allocates its tensors on first use: before capture
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up off the capturing stream, as torch asks
            for _ in range(2):
                self.cache.reset()
                self._run_step()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):  # records kernels, runs none
            self.logits, self.values = self._run_step()

    def _run_step(self):
        return self.forward(self.step_lm, self.input_ids, self.attention_mask, self.position_ids)

    def prefill(self, input_ids, attention_mask, position_ids):
        self.cache.reset()  # in place: the graph keeps reading the same tensors
        return super().prefill(input_ids, attention_mask, position_ids)

    def __call__(self, input_ids, attention_mask, position_ids):
        self.input_ids.copy_(input_ids)
        self.attention_mask.copy_(attention_mask)
        self.position_ids.copy_(position_ids)
        self.graph.replay()
        return self.logits, self.values  # overwritten by the next replay


_GRAPH_CACHE_ROUND = 64  # cache lengths round up to this, so graphs serve many prompt lengths
_MAX_GRAPHS = 4


class FastEngine:
    """``generation.engine: fast``. Holds its own state: the CUDA graphs captured so far (one
    per batch size, cache length and weights) and whether capture ever failed."""

    name = "fast"

    def __init__(self, warn: Callable[[str], None]):
        self.warn = warn
        self.graphs: dict[tuple, _GraphedStep] = {}
        self.graphs_failed = False

    def sample(self, lm, input_ids, attention_mask, request: Request) -> Decoded:
        """Up to ``request.max_new_tokens`` new tokens per row of left-padded ``input_ids``
        (B, P) with ``attention_mask`` (B, P), stopping once every row has sampled an EOS."""
        batch, prompt_len = input_ids.shape
        device, width = input_ids.device, request.max_new_tokens
        keep = request.value_head is not None
        eos = torch.tensor(request.eos_ids, dtype=torch.long, device=device)
        processors = logits_processors(request.gen, prompt_len, width, eos)
        step = self._decode_step(
            lm, request.value_head, batch, prompt_len + width, device, request.gen.compile
        )
        mask = torch.zeros(batch, step.cache_len, dtype=torch.long, device=device)
        mask[:, :prompt_len] = attention_mask
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # pads sit at 0
        sequences = torch.full((batch, prompt_len + width), request.pad_id, device=device)
        sequences[:, :prompt_len] = input_ids
        logprobs = torch.zeros(batch, width, device=device) if keep else None
        values = torch.zeros(batch, width, device=device) if keep else None
        unfinished = torch.ones(batch, dtype=torch.long, device=device)
        logits, value = step.prefill(input_ids, mask, positions)
        position = positions[:, -1:]
        for n in range(width):
            end = prompt_len + n
            if n:
                mask[:, end - 1] = 1  # every row attends to its last token, pad or not
                position = position + 1
                logits, value = step(sequences[:, end - 1 : end], mask, position)
            token = choose_tokens(processors(sequences[:, :end], logits), request.gen.do_sample)
            token = token * unfinished + request.pad_id * (1 - unfinished)  # finished: pad
            sequences[:, end] = token
            if keep:
                logprobs[:, n] = token_logprobs(logits, token, request.logprob_temperature)
                values[:, n] = value
            unfinished = unfinished & ~torch.isin(token, eos)
            if not unfinished.any():  # where generate() stops: the same draws from the RNG
                break
        steps = n + 1
        kept = (logprobs[:, :steps], values[:, :steps]) if keep else ()
        return Decoded(sequences[:, prompt_len : prompt_len + steps], *kept)

    def _decode_step(
        self, lm, value_head, batch: int, cache_len: int, device: torch.device, compile_step: bool
    ):
        graphed = device.type == "cuda" and not self.graphs_failed and not is_bitsandbytes(lm)
        if graphed or compile_step:  # each shape is a capture or a compilation: fewer shapes
            cache_len = math.ceil(cache_len / _GRAPH_CACHE_ROUND) * _GRAPH_CACHE_ROUND
        if not graphed:
            return _EagerStep(lm, value_head, cache_len, compile_step)
        key = (batch, cache_len, compile_step, _weights_key(lm, value_head))
        if key not in self.graphs:
            captured = self._capture(lm, value_head, batch, cache_len, device, compile_step)
            if captured is None:
                return _EagerStep(lm, value_head, cache_len)
            while len(self.graphs) >= _MAX_GRAPHS:
                self.graphs.pop(next(iter(self.graphs)))
            self.graphs[key] = captured
        return self.graphs[key]

    def _capture(
        self, lm, value_head, batch, cache_len, device, compile_step
    ) -> _GraphedStep | None:
        try:
            with torch.cuda.device(device):
                return _GraphedStep(lm, value_head, batch, cache_len, device, compile_step)
        except Exception as err:  # noqa: BLE001 - whatever breaks capture, decode eagerly
            self.graphs_failed = True
            detail = str(err).strip().splitlines()
            reason = type(err).__name__ + (f": {detail[0][:200]}" if detail else "")
            self.warn(
                f"generation.engine=fast: CUDA graph capture failed ({reason}); decoding eagerly"
            )
            return None


def _weights_key(lm, value_head) -> tuple:
    """What a captured step depends on besides its input buffers: the storage of every
    parameter (FSDP/ZeRO-3 gather into new storage) and the Python switches its forward reads
    (train/eval, peft's adapter on/off, as the reference policy flips it)."""
    modules = [*lm.modules(), *(value_head.modules() if value_head is not None else ())]
    weights = tuple(
        (id(m), m.training, *(p.data_ptr() for p in m.parameters(recurse=False))) for m in modules
    )
    return weights, adapter_state(lm)
