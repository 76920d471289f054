"""Tensor helpers every layer uses: masked reductions, padding, log-probabilities.

Pure functions of tensors; no model objects, no config, no I/O. Per-token tensors are
(batch, length) with an explicit ``mask`` (1 = a real token, 0 = padding).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over positions where ``mask`` is 1 (all of them, or along ``dim``)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance over masked positions; Bessel-corrected like ``torch.var`` by default."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        variance = variance * n / (n - 1)
    return variance


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(x - mean) / std over masked positions; ``shift_mean=False`` adds the mean back.

    Masked positions come out as 0 so they never leak into later sums.
    """
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(values.dtype)


def masked_sums(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(3,) float64: the sum, the sum of squares and the number of the masked values; summed
    over processes (an all-reduce), they give the whole batch's mean and variance."""
    mask = mask.to(torch.float64)
    values = values.to(torch.float64) * mask
    return torch.stack([values.sum(), values.square().sum(), mask.sum()])


def whiten_with_sums(
    values: torch.Tensor, mask: torch.Tensor, sums: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """``masked_whiten`` with the mean and the (Bessel) variance of ``masked_sums`` ``sums``,
    which may cover more values than ``values`` (every process's): ``(x - mean) / std``, 0 on
    padding."""
    total, total_sq, n = sums.to(torch.float64).unbind()
    mean = total / n.clamp(min=1.0)
    var = (total_sq - n * mean.square()).clamp(min=0.0) / (n - 1).clamp(min=1.0)
    whitened = (values.to(torch.float64) - mean) * torch.rsqrt(var + eps)
    return (whitened * mask.to(torch.float64)).to(values.dtype)


def logprobs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log pi(label | context) for each position: logits (B, T, V), labels (B, T) -> (B, T);
    with ``temperature``, of the distribution sampling draws from, softmax(logits / T).

    ``token_logprobs`` one row at a time, so no full-vocabulary float32 or log-softmax copy of
    the (B, T, V) tensor is ever held.
    """
    rows = zip(logits, labels, strict=True)
    return torch.stack([token_logprobs(row, row_labels, temperature) for row, row_labels in rows])


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log pi(token), pi = softmax(logits / temperature), in float32: logits (N, V), tokens
    (N,) -> (N,). Computed as ``logit[token] - logsumexp(logits)``; no copy of float32 logits
    at temperature 1."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    picked = logits.gather(-1, tokens[:, None]).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def sequence_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over each response's real tokens: (B, T) -> (B,)."""
    return (values * mask.to(values.dtype)).sum(1)


def is_finite(x: torch.Tensor | float) -> bool:
    """True when every element is finite (NaN and +-Inf are not)."""
    if isinstance(x, torch.Tensor):
        return bool(torch.isfinite(x).all())
    return math.isfinite(x)


def pad_right(sequences: list[torch.Tensor], pad_value: int | float) -> torch.Tensor:
    """Stack 1-D tensors of different lengths into (B, max_len), padding on the right."""
    return torch.nn.utils.rnn.pad_sequence(sequences, batch_first=True, padding_value=pad_value)


def pad_left(sequences: list[torch.Tensor], pad_value: int | float) -> torch.Tensor:
    """Stack 1-D tensors of different lengths into (B, max_len), padding on the left."""
    width = max(len(s) for s in sequences)
    return torch.stack([F.pad(s, (width - len(s), 0), value=pad_value) for s in sequences])
