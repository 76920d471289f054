"""Dense layers on CPU through oneDNN (``model.cpu_linear: onednn``, the default).

PyTorch runs a float32 ``nn.Linear`` on CPU through MKL's sgemm. On processors MKL does not
pick its fast paths for (AMD EPYC among them: MKL keeps to its AVX2 code there, and packs the
weight again on every call) that is slower than oneDNN, which PyTorch ships too and
reaches through ``torch.ops.mkldnn._linear_pointwise`` (the kernel inductor uses for CPU
linears). docs/performance.md has the measurements.

``use_onednn(model)`` swaps the class of every plain ``nn.Linear`` (and transformers' ``Conv1D``,
GPT-2's dense layer) of at least ``MIN_WEIGHTS`` weights in ``model`` for a subclass whose forward calls oneDNN on CPU float32 /
bfloat16 tensors and falls back to the parent's forward anywhere else (CUDA, other dtypes). The
swap keeps parameters, state-dict keys, peft wrapping and tied weights as they are. The
backward is oneDNN too: the gradient of the input is the same kernel on the transposed weight;
the gradient of a trainable weight (full fine-tuning, LoRA) is a plain matmul. Smaller layers
(LoRA's A and B, the value head) stay on MKL, whose fixed cost per call is lower. Under
``torch.compile`` the layers trace as ``F.linear`` and the compiler picks the kernel.

Results differ from MKL's by float32 rounding (about 1e-6 relative), and are the same from
run to run on the same machine and thread count.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger("rewardtune")

_DTYPES = (torch.float32, torch.bfloat16)
MIN_WEIGHTS = 1 << 16  # below this many weights MKL's lower fixed cost per call wins


def onednn_available() -> bool:
    """Whether this PyTorch has oneDNN's CPU linear kernel."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x (..., in) @ weight (out, in)^T + bias; ``weight`` may be a strided view."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [None], "")


class _LinearFunction(torch.autograd.Function):
    """y = x W^T + b, forward and input gradient on oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x if weight.requires_grad else None, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn(grad, weight.t(), None)
        if ctx.needs_input_grad[1]:
            grad_w = grad.reshape(-1, grad.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad.reshape(-1, grad.shape[-1]).sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` through oneDNN where it applies (CPU, float32/bfloat16, one dtype), else
    ``F.linear`` itself."""
    if (
        x.device.type != "cpu"
        or weight.device.type != "cpu"
        or x.dtype not in _DTYPES
        or weight.dtype != x.dtype
        or (bias is not None and bias.dtype != x.dtype)
        or x.numel() == 0
        or torch.compiler.is_compiling()
    ):
        return nn.functional.linear(x, weight, bias)
    x = x.contiguous()
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    )
    if not needs_grad:
        return _onednn(x, weight, bias)
    return _LinearFunction.apply(x, weight, bias)


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` whose CPU forward runs on oneDNN (set by ``use_onednn``, never built)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def _conv1d_class():
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers always has it today
        return None

    class OneDNNConv1D(Conv1D):
        """transformers' ``Conv1D`` (x @ W + b, W stored (in, out)) on oneDNN."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return linear(x, self.weight.t(), self.bias)

    return Conv1D, OneDNNConv1D


def use_onednn(model: nn.Module, min_weights: int | None = None) -> int:
    """Swap every plain CPU ``nn.Linear`` / ``Conv1D`` of at least ``min_weights`` (default
    ``MIN_WEIGHTS``) weights in ``model`` for its oneDNN subclass, in place; returns how many
    were swapped (0 where this PyTorch has no oneDNN)."""
    if not onednn_available():
        log.debug("model.cpu_linear=onednn: this PyTorch has no oneDNN linear; using torch's")
        return 0
    swaps = {nn.Linear: OneDNNLinear}
    if (conv := _conv1d_class()) is not None:
        swaps[conv[0]] = conv[1]
    min_weights = MIN_WEIGHTS if min_weights is None else min_weights
    swapped = 0
    for module in model.modules():
        target = swaps.get(type(module))
        if (
            target is not None
            and module.weight.numel() >= min_weights
            and module.weight.device.type == "cpu"  # a GPU's layers keep torch's own forward
        ):
            module.__class__ = target
            swapped += 1
    return swapped
