"""The trainable policy: the language model and its value head as one module, and the
reference policy training is kept close to."""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from rewardtune.config import ModelConfig
from rewardtune.core.tensors import logprobs_from_logits
from rewardtune.models.cpu_linear import use_onednn
from rewardtune.models.hub import (
    ModelSource,
    adapter_disabled,
    attach_lora,
    base_model,
    enable_gradient_checkpointing,
    gradient_checkpointing_active,
    has_adapter,
    head_is_plain,
    is_encoder_decoder,
    load_adapter,
    load_base_model,
    load_tokenizer,
    output_head,
    pick_dtype,
    reference_adapter_active,
    resolve_source,
)
from rewardtune.types import RewardtuneError

log = logging.getLogger("rewardtune")

CHAT_STOP_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


class ValueHead(nn.Module):
    """V(s): dropout + linear on the last hidden state, as classic TRL's value head."""

    def __init__(self, hidden_size: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.to(self.summary.weight.dtype)
        return self.summary(self.dropout(hidden)).squeeze(-1)


def _hidden_size(config) -> int:
    for key in ("hidden_size", "d_model", "n_embd"):
        if hasattr(config, key):
            return int(getattr(config, key))
    raise RewardtuneError(f"cannot find the hidden size of model type {config.model_type!r}")


class PolicyWithValueHead(nn.Module):
    """The language model (plain or peft-wrapped) and its value head, as one trainable module.

    ``forward`` scores given responses: logits (or log-probabilities) on the response
    positions and one value per response token. Queries are left-padded, responses
    right-padded.

    Memory switches (``model.*``): ``gradient_checkpointing`` recomputes each layer in the
    backward of the update; ``logprob_chunk`` (decoder-only models) runs the LM head over
    that many response positions at a time, so the (batch, length, vocab) logits never
    exist whole.
    """

    gradient_checkpointing: bool = False
    logprob_chunk: int | None = None

    def __init__(self, lm: nn.Module, seq2seq: bool, value_dropout: float = 0.1):
        super().__init__()
        self.lm = lm
        self.seq2seq = seq2seq
        config = lm.config
        self.v_head = ValueHead(_hidden_size(config), value_dropout)
        device = next(lm.parameters()).device
        self.v_head.to(device)
        base = base_model(lm)
        self._keeps_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        self.decoder_start_token_id = getattr(config, "decoder_start_token_id", None)

    @property
    def has_adapter(self) -> bool:
        return has_adapter(self.lm)

    def forward(
        self,
        query_ids: torch.Tensor,
        query_mask: torch.Tensor,
        response_ids: torch.Tensor,
        response_mask: torch.Tensor,
        with_values: bool = True,
        lm: nn.Module | None = None,
        return_logprobs: bool = False,
        temperature: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns ``(logits (B, R, V), values (B, R) or None)`` for the response tokens;
        ``lm``: another language model of the same architecture to run (the reference's
        frozen copy), default this policy's; with ``return_logprobs``,
        ``(log pi(response token) (B, R) float32, values)``, pi = softmax(logits /
        ``temperature``)."""
        lm = self.lm if lm is None else lm
        checkpointing = self.gradient_checkpointing and torch.is_grad_enabled()
        with gradient_checkpointing_active(lm) if checkpointing else contextlib.nullcontext():
            return self._forward(
                lm,
                query_ids,
                query_mask,
                response_ids,
                response_mask,
                with_values,
                temperature if return_logprobs else None,
            )

    def chunks_logprobs(self, lm: nn.Module | None = None) -> bool:
        """``logprob_chunk`` applies to ``lm`` (default this policy's): a decoder-only model
        whose logits are its head applied to the last hidden state, and which can skip
        computing them (``logits_to_keep``)."""
        return (
            self.logprob_chunk is not None
            and not self.seq2seq
            and self._keeps_logits
            and head_is_plain(self.lm if lm is None else lm)
        )

    def _forward(
        self, lm, query_ids, query_mask, response_ids, response_mask, with_values, logprobs_at
    ):
        """``logprobs_at``: the temperature of the log-probabilities to return, or None for
        the logits."""
        if logprobs_at is not None and self.chunks_logprobs(lm):
            hidden, _ = self._causal_forward(
                lm, query_ids, query_mask, response_ids, response_mask, logits_to_keep=1
            )
            values = self.v_head(hidden) if with_values else None
            logprobs = chunked_logprobs(
                output_head(lm), hidden, response_ids, self.logprob_chunk, logprobs_at
            )
            return logprobs, values
        if self.seq2seq:
            hidden, logits = self._seq2seq_forward(
                lm, query_ids, query_mask, response_ids, response_mask
            )
        else:
            hidden, logits = self._causal_forward(
                lm, query_ids, query_mask, response_ids, response_mask
            )
        values = self.v_head(hidden) if with_values else None
        if logprobs_at is not None:
            return logprobs_from_logits(logits, response_ids, logprobs_at), values
        return logits, values

    def _causal_forward(
        self, lm, query_ids, query_mask, response_ids, response_mask, logits_to_keep=None
    ):
        input_ids = torch.cat([query_ids, response_ids], dim=1)
        attention_mask = torch.cat([query_mask, response_mask], dim=1)
        # positions count real tokens only, as generate() does with left padding
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        n_resp = response_ids.shape[1]
        keep = logits_to_keep or n_resp + 1
        extra = {"logits_to_keep": keep} if self._keeps_logits else {}
        out = lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
            **extra,
        )
        # the token at position t is predicted from position t-1
        logits = out.logits[:, -n_resp - 1 : -1]
        hidden = out.hidden_states[-1][:, -n_resp - 1 : -1]
        return hidden, logits

    def _seq2seq_forward(self, lm, query_ids, query_mask, response_ids, response_mask):
        start = torch.full_like(response_ids[:, :1], self.decoder_start_token_id)
        decoder_input_ids = torch.cat([start, response_ids[:, :-1]], dim=1)
        decoder_mask = torch.cat([torch.ones_like(start), response_mask[:, :-1]], dim=1)
        out = lm(
            input_ids=query_ids,
            attention_mask=query_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_mask,
            output_hidden_states=True,
            use_cache=False,
        )
        return out.decoder_hidden_states[-1], out.logits


def _head_logprobs(
    head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    return logprobs_from_logits(head(hidden), labels, temperature)


def chunked_logprobs(
    head: nn.Module, hidden: torch.Tensor, labels: torch.Tensor, chunk: int, temperature=1.0
) -> torch.Tensor:
    """log pi(label) from hidden states (B, R, H), ``chunk`` positions at a time: (B, R).

    With gradients, each chunk's logits are recomputed in the backward (activation
    checkpointing of the head), so only one (B, chunk, V) block lives at a time in the
    forward and in the backward; the result equals ``logprobs_from_logits(head(hidden),
    labels, temperature)``.
    """
    grad = torch.is_grad_enabled()
    parts = []
    for start in range(0, hidden.shape[1], chunk):
        h, y = hidden[:, start : start + chunk], labels[:, start : start + chunk]
        if grad:
            parts.append(checkpoint(_head_logprobs, head, h, y, temperature, use_reentrant=False))
        else:
            parts.append(_head_logprobs(head, h, y, temperature))
    return torch.cat(parts, dim=1)


@dataclass
class Policy:
    """What the trainer needs of a model: the trainable module, the tokenizer, the reference."""

    module: PolicyWithValueHead
    tokenizer: object
    source: ModelSource
    config: ModelConfig
    ref_lm: nn.Module | None  # frozen copy (full fine-tuning), None when an adapter is used

    @property
    def seq2seq(self) -> bool:
        return self.module.seq2seq

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def prompt_budget(self, response_tokens: int) -> int | None:
        """The most prompt tokens that leave room for ``response_tokens`` in the model's
        context (an encoder-decoder's prompt has the encoder to itself); None: no known limit."""
        config = self.module.lm.config
        context = next(
            (
                getattr(config, name)
                for name in ("max_position_embeddings", "n_positions", "n_ctx")
                if isinstance(getattr(config, name, None), int)
            ),
            None,
        )
        if context is None:
            return None
        return context if self.seq2seq else max(context - response_tokens, 1)

    def reference(self):
        """Context manager yielding the reference LM, the policy training started from: the
        frozen copy (full fine-tuning), the starting adapter loaded a second time and frozen
        (``model.adapter``), or the base model with the new adapter disabled."""
        if self.ref_lm is not None:
            return contextlib.nullcontext(self.ref_lm)
        if self.config.adapter:
            return reference_adapter_active(self.module.lm)
        return adapter_disabled(self.module.lm)

    @property
    def reference_name(self) -> str:
        """What ``reference()`` is, in words (eval.json and the report say it)."""
        if self.config.adapter:
            return f"base + adapter {self.config.adapter}"
        if self.module.has_adapter:
            return "base model (the new adapter disabled)"
        return "frozen copy of the initial weights"

    def eos_token_ids(self, chat: bool) -> list[int]:
        """EOS of the tokenizer and the model's generation config, plus chat end-of-turn tokens."""
        ids = set()
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        configured = getattr(self.module.lm.generation_config, "eos_token_id", None)
        ids.update(
            configured
            if isinstance(configured, list)
            else [configured]
            if configured is not None
            else []
        )
        if chat:
            vocab = self.tokenizer.get_vocab()
            ids.update(vocab[t] for t in CHAT_STOP_TOKENS if t in vocab)
        return sorted(ids)


def count_parameters(policy: Policy) -> dict[str, int]:
    """Trainable LM (or LoRA) parameters, value head, and the total, as the notebooks print."""
    lm = policy.module.lm
    return {
        "trainable_lm": sum(p.numel() for p in lm.parameters() if p.requires_grad),
        "value_head": sum(p.numel() for p in policy.module.v_head.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in policy.module.parameters()),
    }


def load_policy(
    cfg: ModelConfig, device: torch.device | str | None = None, with_reference: bool = True
) -> Policy:
    """Load tokenizer + LM (+ LoRA or an existing adapter) + value head, and the reference
    (``with_reference=False`` skips the frozen copy of a fully fine-tuned model and the
    reference adapter of a continued one)."""
    source = resolve_source(cfg.name)
    seq2seq = {"causal": False, "seq2seq": True}.get(cfg.kind)
    if seq2seq is None:
        seq2seq = is_encoder_decoder(source, cfg.trust_remote_code)
    tokenizer = load_tokenizer(source, cfg.trust_remote_code)
    tokenizer.padding_side = "left"
    dtype = pick_dtype(cfg.dtype)
    lm = load_base_model(cfg, source, seq2seq, dtype)
    if cfg.quantization == "none" and device is not None:
        lm.to(device)
    ref_lm = None
    if cfg.adapter:
        lm = load_adapter(lm, cfg.adapter, with_reference)
    elif cfg.lora is not None:
        lm = attach_lora(lm, cfg.lora, seq2seq)
    elif with_reference:
        ref_lm = copy.deepcopy(lm).eval().requires_grad_(False)
    if cfg.gradient_checkpointing:  # after the reference copy: it never trains
        enable_gradient_checkpointing(lm)
    module = PolicyWithValueHead(lm, seq2seq)
    module.gradient_checkpointing, module.logprob_chunk = (
        cfg.gradient_checkpointing,
        cfg.logprob_chunk,
    )
    if cfg.logprob_chunk is not None and not module.chunks_logprobs():
        log.warning(
            "model.logprob_chunk has no effect on %s (an encoder-decoder, or logits scaled "
            "after the LM head): its logits are computed whole",
            type(base_model(lm)).__name__,
        )
    if cfg.cpu_linear == "onednn":  # after LoRA and the reference copy: every layer swapped
        for model in (module, ref_lm):
            if model is not None:
                use_onednn(model)
    return Policy(module, tokenizer, source, cfg, ref_lm)
