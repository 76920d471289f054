"""The update of one PPO step: ``ppo_epochs`` passes over shuffled minibatches, each one
clipped policy loss (+ value loss, + KL loss) and one optimizer step, with classic TRL's
early stopping and ratio guard."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields

import torch

from rewardtune import distributed
from rewardtune.config import Config, PPOConfig
from rewardtune.core.advantages import Estimator, kl_loss
from rewardtune.core.ppo import (
    mean_ratio,
    policy_loss,
    should_skip_minibatch,
    should_stop_early,
    value_loss,
)
from rewardtune.core.surrogate import constant_normaliser, ends_without_stop, resolve_aggregation
from rewardtune.distributed import global_mean
from rewardtune.sampling.rollout import eval_mode, sampling_temperature
from rewardtune.training.guards import NonFiniteError, check_finite
from rewardtune.types import Minibatch, Rollout, UpdateStats


@dataclass
class MinibatchStats:
    """What one minibatch measured, as 0-d tensors on the device (no host sync here): the
    update reduces them once, after its last minibatch."""

    policy_loss: torch.Tensor
    total_loss: torch.Tensor
    clipfrac: torch.Tensor
    approxkl: torch.Tensor
    grad_norm: torch.Tensor
    skipped: bool  # the ratio guard skipped its optimizer step
    value_loss: torch.Tensor | None = None  # only with a value head
    value_clipfrac: torch.Tensor | None = None
    kl_loss: torch.Tensor | None = None  # only with ppo.kl_in: loss


# each is averaged into the UpdateStats field of the same name
MEASURED = tuple(f.name for f in fields(MinibatchStats) if f.name != "skipped")


def reduce_minibatches(
    accelerator, minibatches: list[MinibatchStats], stopped: bool
) -> UpdateStats:
    """Means over every minibatch of every process, one gather per field."""
    means = {}
    for name in MEASURED:
        values = [getattr(m, name) for m in minibatches]
        if values and values[0] is not None:
            means[name] = global_mean(accelerator, torch.stack(values))
    skipped = sum(int(m.skipped) for m in minibatches)
    return UpdateStats(**means, early_stopped=float(stopped), skipped_minibatches=skipped)


class Updater:
    """Trains ``model`` with ``optimizer`` on one step's rollout; the update runs without
    dropout (as sampling did): until the weights move, the ratio is exactly 1."""

    def __init__(self, accelerator, model, optimizer, config: Config, estimator: Estimator):
        self.accelerator, self.model, self.optimizer = accelerator, model, optimizer
        self.ppo, self.estimator = config.ppo, estimator
        # the generation budget sizes Dr. GRPO's constant normaliser
        longest = config.generation.longest
        self.loss_options = policy_loss_options(self.ppo, longest, self.minibatch_rows())
        # ppo.compile: the same module through torch.compile (its first minibatch compiles;
        # a new minibatch shape recompiles once, then runs with dynamic shapes)
        self.forward = torch.compile(model) if self.ppo.compile else model
        self.temperature = sampling_temperature(config.generation)  # that of the old logprobs

    def update(self, data: Minibatch, kl_coef: float, step: int) -> UpdateStats:
        """``ppo_epochs`` passes over this process's samples; ``step`` seeds the order."""
        measured: list[MinibatchStats] = []
        stopped = False
        with eval_mode(self.model):
            for epoch in self.epochs(data, step):
                for batch in epoch:
                    measured.append(self.minibatch_step(batch, kl_coef, step))
                if self.stop_early(measured[-1].approxkl):
                    stopped = True
                    break
        return reduce_minibatches(self.accelerator, measured, stopped)

    def epochs(self, data: Minibatch, step: int) -> Iterator[Iterator[Minibatch]]:
        """``ppo_epochs`` times: this process's samples in a new order, as minibatches of
        ``mini_batch_size / world``, each trimmed of its all-padding columns."""
        mini = self.minibatch_rows()
        generator = torch.Generator().manual_seed(self.ppo.seed + step)
        for _ in range(self.ppo.ppo_epochs):
            order = torch.randperm(len(data), generator=generator)
            yield (data.index(index).trim() for index in order.split(mini))

    def minibatch_rows(self) -> int:
        """Samples per minibatch on each process."""
        return max(1, self.ppo.mini_batch_size // self.accelerator.num_processes)

    def stop_early(self, approxkl: torch.Tensor) -> bool:
        """``ppo.early_stopping``, checked after each epoch on its last minibatch as classic TRL
        did; decided on the mean over processes, so all stop together."""
        if not self.ppo.early_stopping:
            return False
        mean = global_mean(self.accelerator, approxkl)
        return should_stop_early(mean, self.ppo.target_kl_early)

    def skip_minibatch(self, logprobs, old_logprobs, mask) -> bool:
        """``ppo.ratio_threshold``: decided on the mean over processes, so all skip together."""
        if self.ppo.ratio_threshold is None:
            return False
        ratio = global_mean(self.accelerator, mean_ratio(logprobs.detach(), old_logprobs, mask))
        return should_skip_minibatch(ratio, self.ppo.ratio_threshold)

    def minibatch_step(self, batch: Minibatch, kl_coef: float, step: int) -> MinibatchStats:
        """Loss and one optimizer step (unless the ratio guard skips it) on one minibatch."""
        mask = batch.response_mask
        logprobs, values = self.forward(
            **batch.inputs(), return_logprobs=True, temperature=self.temperature
        )
        pg_loss, clipfrac, approxkl = policy_loss(
            logprobs, batch.old_logprobs, batch.advantages, batch.loss_mask, **self.loss_options
        )
        loss, terms = pg_loss, {}
        if self.estimator.uses_critic:  # critic-free estimators have no value loss
            vf_loss, vf_clipfrac = value_loss(
                values.float(), batch.old_values, batch.returns, mask, self.ppo.cliprange_value
            )
            loss = loss + self.ppo.vf_coef * vf_loss
            terms = {"value_loss": _measured(vf_loss), "value_clipfrac": _measured(vf_clipfrac)}
        if self.estimator.kl_in == "loss":
            kl_term = kl_loss(logprobs, batch.ref_logprobs, mask)
            loss = loss + kl_coef * kl_term
            terms["kl_loss"] = _measured(kl_term)
        check_finite(step, "loss", loss)
        skip = self.skip_minibatch(logprobs, batch.old_logprobs, mask)
        grad_norm = torch.zeros((), device=loss.device) if skip else self.optimizer_step(loss, step)
        return MinibatchStats(
            policy_loss=_measured(pg_loss),
            total_loss=_measured(loss),
            clipfrac=_measured(clipfrac),
            approxkl=_measured(approxkl),
            grad_norm=grad_norm,
            skipped=skip,
            **terms,
        )

    def optimizer_step(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """Backward, clip, step; returns the gradient norm (0-d, float32)."""
        self.accelerator.backward(loss)
        grad_norm = self.clip_gradients(step)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def clip_gradients(self, step: int) -> torch.Tensor:
        """Clips to ``ppo.max_grad_norm``; a NaN/Inf norm stops before the optimizer steps
        (the one host sync of a minibatch's numbers)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.ppo.max_grad_norm is not None:
            norm = self.accelerator.clip_grad_norm_(params, self.ppo.max_grad_norm)
            if norm is None:  # DeepSpeed clips inside its own step and reports nothing here
                return torch.zeros((), device=self.accelerator.device)
        else:
            norm = torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in params if p.grad is not None])
            )
        norm = torch.as_tensor(distributed.whole_tensor(norm)).detach().float()
        if not math.isfinite(float(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(
                f"step {step}: gradients are NaN/Inf; lower ppo.learning_rate or set "
                "ppo.reward_clip"
            )
        return norm


def policy_loss_options(ppo: PPOConfig, max_response_tokens: int, rows: int) -> dict:
    """``core.ppo.policy_loss``'s keywords from ``ppo``: the clip range of the ratio's level
    (``cliprange_low`` / ``cliprange_high``, or GSPO's ``sequence_cliprange``), the ratio, the
    aggregation and Dr. GRPO's constant normaliser (``rows`` samples per minibatch)."""
    if ppo.importance_ratio == "sequence":
        low, high = ppo.sequence_cliprange
    else:
        low = ppo.cliprange if ppo.cliprange_low is None else ppo.cliprange_low
        high = ppo.cliprange if ppo.cliprange_high is None else ppo.cliprange_high
    return {
        "cliprange": low,
        "cliprange_high": high,
        "ratio_level": ppo.importance_ratio,
        "aggregation": resolve_aggregation(
            ppo.loss_aggregation, ppo.advantage, ppo.grpo_scale, ppo.importance_ratio
        ),
        "normaliser": constant_normaliser(max_response_tokens, rows),
    }


def truncated_responses(rollout: Rollout, stop_ids: list[int]) -> torch.Tensor:
    """``ppo.mask_truncated``: (B,) True for the responses the length limit cut (no stop token
    at their end); their policy loss is masked."""
    stops = torch.tensor(sorted(stop_ids), dtype=torch.long)
    return ends_without_stop(rollout.response_ids, rollout.response_mask, stops)


def _measured(value: torch.Tensor) -> torch.Tensor:
    """A minibatch's number, kept on the device as a float32 0-d tensor."""
    return value.detach().float()


def estimator(ppo: PPOConfig) -> Estimator:
    """The ``ppo`` keys that decide how scores become advantages."""
    return Estimator(
        name=ppo.advantage,
        samples_per_prompt=ppo.samples_per_prompt,
        kl_estimator=ppo.kl_estimator,
        kl_in=ppo.kl_in,
        grpo_scale=ppo.grpo_scale,
        gamma=ppo.gamma,
        lam=ppo.lam,
        whiten_rewards=ppo.whiten_rewards,
    )
