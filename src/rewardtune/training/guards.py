"""What the classic API checks: ``generate()``'s arguments; ``step()``'s scores and groups,
NaN/Inf before and after it trains, a runaway KL."""

from __future__ import annotations

from dataclasses import replace

import torch

from rewardtune.config import PPOConfig
from rewardtune.core.tensors import is_finite
from rewardtune.distributed import global_mean
from rewardtune.rewards import check_scores
from rewardtune.types import RewardtuneError, Rollout


class NonFiniteError(RewardtuneError):
    """NaN or Inf in a reward, logprob, loss or gradient."""


def generation_overrides(kwargs: dict) -> dict:
    """``generate()``'s keyword arguments that override ``config.generation``."""
    known = {"max_new_tokens", "min_new_tokens", "do_sample", "top_k", "top_p", "temperature"}
    unknown = set(kwargs) - known - {"pad_token_id", "eos_token_id"}
    if unknown:
        raise RewardtuneError(f"generate(): unsupported argument(s) {', '.join(sorted(unknown))}")
    return {k: v for k, v in kwargs.items() if k in known}


def scores_tensor(scores, n: int) -> torch.Tensor:
    """``step()``'s scores (floats, 0-d tensors or one tensor) as (n,) float32, checked."""
    if torch.is_tensor(scores):
        scores = scores.detach().flatten().cpu().tolist()
    else:
        scores = [float(s.item()) if torch.is_tensor(s) else s for s in scores]
    return torch.tensor(check_scores("scores", scores, n), dtype=torch.float32)


def check_groups(queries: list[torch.Tensor], k: int) -> None:
    """k = ``ppo.samples_per_prompt`` consecutive responses must share their query."""
    if k == 1:
        return
    whole = len(queries) % k == 0 and all(
        torch.equal(queries[i], queries[i - i % k]) for i in range(len(queries))
    )
    if not whole:
        raise RewardtuneError(
            f"step(): {len(queries)} responses are not groups of "
            f"ppo.samples_per_prompt = {k} consecutive responses to the same query; pass "
            "each query k times in a row, as trainer.dataloader yields them"
        )


def mask_nonfinite(
    accelerator, scores: torch.Tensor, ppo: PPOConfig, step: int
) -> tuple[torch.Tensor, int]:
    """NaN/Inf scores stop the run, or (``ppo.skip_nonfinite_rewards``) their
    samples stay in the batch with every token masked out of the loss and the stats: each
    process keeps the same number of samples, minibatches and gathered lengths. Returns
    (valid (B,), how many were bad on all processes)."""
    valid, k = torch.isfinite(scores), ppo.samples_per_prompt
    if k > 1:  # a group's baseline needs every member: mask the whole group
        valid = valid.view(-1, k).all(1).repeat_interleave(k)
    total = len(scores) * accelerator.num_processes
    n_bad = round(global_mean(accelerator, (~valid).float()) * total)
    if n_bad and not ppo.skip_nonfinite_rewards:
        raise NonFiniteError(
            f"step {step}: reward returned {n_bad} non-finite score(s) "
            "(NaN/Inf); fix the reward or set ppo.skip_nonfinite_rewards=true"
        )
    if n_bad == total:
        raise NonFiniteError(f"step {step}: every reward score is NaN/Inf; nothing to train on")
    return valid, n_bad


def exclude(rollout: Rollout, valid: torch.Tensor) -> Rollout:
    """The rollout with the response tokens of samples that are not ``valid`` (B,) masked out
    of everything (a new record; ``rollout`` is left as it was)."""
    if valid.all():
        return rollout
    mask = rollout.response_mask * valid.to(rollout.response_mask)[:, None]
    return replace(rollout, response_mask=mask)


def check_finite(step: int, what: str, *tensors: torch.Tensor) -> None:
    for tensor in tensors:
        if not is_finite(tensor):
            raise NonFiniteError(
                f"step {step}: {what} became NaN/Inf; the last good checkpoint is "
                "kept; lower ppo.learning_rate or check the reward's scale"
            )


def check_kl(step: int, mean_kl: float, max_kl: float | None) -> None:
    if max_kl is not None and mean_kl > max_kl:
        raise NonFiniteError(
            f"step {step}: objective/kl = {mean_kl:.2f} exceeds ppo.max_kl = "
            f"{max_kl}; the policy ran away from the reference (raise init_kl_coef "
            "or lower learning_rate)"
        )
