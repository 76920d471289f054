"""The LM weights that train: the adapter's under LoRA, the whole model's under full
fine-tuning. State dicts in, state dicts out; the files they live in are ``runs.checkpoint``'s."""

from __future__ import annotations

import torch

from rewardtune.models.hub import adapter_state_dict, load_adapter_state_dict
from rewardtune.models.policy import Policy
from rewardtune.types import RewardtuneError


def split_policy_state(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A ``PolicyWithValueHead`` state dict -> (the LM's, the value head's)."""
    lm = {k.removeprefix("lm."): v for k, v in state.items() if k.startswith("lm.")}
    head = {k.removeprefix("v_head."): v for k, v in state.items() if k.startswith("v_head.")}
    return lm, head


def trainable_state_dict(
    policy: Policy, lm_state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The LM weights that train: the adapter's, or the whole model's. ``lm_state`` is the
    LM's full state dict when it was gathered from shards (default: read the module)."""
    lm = policy.module.lm
    if policy.module.has_adapter:
        return adapter_state_dict(lm, lm_state)
    return dict(lm_state if lm_state is not None else lm.state_dict())


def load_trainable_state_dict(policy: Policy, state: dict[str, torch.Tensor]) -> None:
    lm = policy.module.lm
    if policy.module.has_adapter:
        unknown = load_adapter_state_dict(lm, state)
        if unknown:
            raise RewardtuneError(f"checkpoint adapter does not fit this model: {unknown[0]}")
    else:
        lm.load_state_dict(state, strict=False)


def value_head_state(
    policy: Policy, head_state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The value head's weights on the host, ready to save."""
    state = head_state if head_state is not None else policy.module.v_head.state_dict()
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors sharing memory (tied embeddings): give each its own."""
    seen: set[int] = set()
    out = {}
    for key, value in state.items():
        ptr = value.untyped_storage().data_ptr()
        out[key] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out
