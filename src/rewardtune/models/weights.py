"""The LM weights that train: the adapter's under LoRA, the whole model's under full
fine-tuning. State dicts in, state dicts out; the files they live in are ``runs.checkpoints``'."""

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


def load_trainable_state_dict(
    policy: Policy, state: dict[str, torch.Tensor], where: str = "checkpoint"
) -> None:
    """Put saved trainable weights into the policy; weights that do not fit it (a key missing,
    unknown or of another shape) are a ``RewardtuneError`` naming the first such key."""
    lm = policy.module.lm
    if policy.module.has_adapter:
        problem = _load_adapter(lm, state)
    else:
        problem = first_mismatch(lm.state_dict(), state)
        if problem is None:
            lm.load_state_dict(state, strict=False)  # tied weights are saved once
    if problem is not None:
        raise RewardtuneError(
            f"{where} does not fit model {policy.config.name}: {problem} (was it trained with "
            "another model.name or model.lora?)"
        )


def _load_adapter(lm, state: dict[str, torch.Tensor]) -> str | None:
    """Load the trained adapter's weights; the first problem, or None."""
    try:
        unexpected, missing = load_adapter_state_dict(lm, state)
    except RuntimeError as err:  # torch names a reshaped key on a line of its own
        lines = [line.strip() for line in str(err).splitlines() if "size mismatch" in line]
        return lines[0] if lines else str(err).splitlines()[0][:200]
    if unexpected:
        return f"unknown key {unexpected[0]}"
    return f"missing key {missing[0]}" if missing else None


def first_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """The first key of ``state`` that ``own`` lacks or holds in another shape, else the first
    key of ``own`` missing from ``state`` (a weight tied to one ``state`` holds is not missing);
    None when the two fit."""
    for key, value in state.items():
        if key not in own:
            return f"unknown key {key}"
        if tuple(own[key].shape) != tuple(value.shape):
            return f"{key} has shape {tuple(value.shape)}, the model {tuple(own[key].shape)}"
    saved = {_storage(own[key]) for key in state}
    for key, value in own.items():
        if key not in state and _storage(value) not in saved:
            return f"missing key {key}"
    return None


def _storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


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
