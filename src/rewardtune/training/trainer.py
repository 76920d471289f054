"""PPOTrainer: rollout -> reward -> advantages -> minibatch epochs, and the classic API.

```python
for batch in trainer.dataloader:
    responses = trainer.generate(batch["input_ids"])
    scores = reward(batch["query"], trainer.decode(responses))
    stats = trainer.step(batch["input_ids"], responses, scores)
    trainer.log_stats(stats, batch, scores)
```
``trainer.train()`` runs the same loop from the config.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from rewardtune import distributed
from rewardtune.config import Config
from rewardtune.core import ppo as core
from rewardtune.core.advantages import Estimator, compute_advantages, kl_loss
from rewardtune.core.tensors import (
    is_finite,
    logprobs_from_logits,
    masked_mean,
    sequence_sum,
)
from rewardtune.data.prompts import batch_indices, load_prompts, sample_lengths
from rewardtune.models.policy import Policy, count_parameters, load_policy
from rewardtune.rewards import WeightedReward, build_reward, check_scores
from rewardtune.runs import checkpoint
from rewardtune.runs.rundir import CHECKPOINTS, METRICS, SAMPLES, RunDir
from rewardtune.sampling import rollout as rollout_lib
from rewardtune.training.signals import Interrupted, graceful_interrupt
from rewardtune.training.summary import summary_html, summary_text
from rewardtune.types import Prompt, PromptBatch, RewardtuneError, Rollout, StepStats


class NonFiniteError(RewardtuneError):
    """NaN or Inf in a reward, logprob, loss or gradient."""


class PPOTrainer:
    """PPO with a KL penalty to a frozen reference, for causal and encoder-decoder LMs.

    Args:
        config: the validated recipe.
        policy: a loaded policy (default: loaded from ``config.model``).
        reward: the total reward (default: built from ``config.reward``); only ``train()``
            calls it, the classic loop calls its own.
        run_dir: where to write config, metrics, samples and checkpoints (None: nowhere).
    """

    def __init__(
        self,
        config: Config,
        policy: Policy | None = None,
        reward: WeightedReward | None = None,
        run_dir: RunDir | None = None,
        accelerator=None,
    ):
        self.config = config
        self.ppo = config.ppo
        self.accelerator = accelerator or distributed.make_accelerator()
        self.is_main = self.accelerator.is_main_process
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        self.estimator = _estimator(self.ppo)
        distributed.check_divisible(
            self.ppo.batch_size, self.ppo.mini_batch_size, self.world, self.ppo.samples_per_prompt
        )
        torch.manual_seed(self.ppo.seed)
        self.policy = policy or load_policy(config.model, self.accelerator.device)
        self.tokenizer = self.policy.tokenizer
        self.reward = reward if reward is not None else build_reward(config.reward)
        if not self.estimator.uses_critic:  # critic-free: the value head neither trains nor saves
            self.policy.module.v_head.requires_grad_(False)
        self.run = run_dir if self.is_main else None
        self.run_path = run_dir.path if run_dir is not None else None  # every rank knows it
        self.train_prompts, self.eval_prompts = load_prompts(
            config.data,
            self.tokenizer,
            max_tokens=self.policy.prompt_budget(config.generation.longest),
        )
        params = [p for p in self.policy.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=self.ppo.learning_rate, weight_decay=0.0)
        distributed.prepare_engine(self.accelerator, self.ppo.mini_batch_size // self.world)
        self.model, self.optimizer = self.accelerator.prepare(self.policy.module, self.optimizer)
        self.kl_coef = self.ppo.init_kl_coef
        self.step_count = 0
        self.eos_ids = self.policy.eos_token_ids(config.data.chat)
        self.pad_id = self.tokenizer.pad_token_id
        self._timings: dict[str, float] = {}
        self._stop_requested = False
        self._last_save, self._saved_step = time.monotonic(), None  # run.save_every_minutes
        self._sampled: tuple | None = None  # the last generate(): its logprobs and values
        self.sampler = rollout_lib.Sampler()  # engine state (CUDA graphs) lives across steps
        self.parameters = count_parameters(self.policy)
        self.last_stats: dict[str, float] = {}  # the last step()'s stats

    def summary(self) -> str:
        """Model, reward, steps done and the last step's headline stats, as text."""
        return summary_text(self)

    def _repr_html_(self) -> str:  # Jupyter shows the summary as a table
        return summary_html(self)

    # -- the classic API -------------------------------------------------------------

    @property
    def dataloader(self) -> Iterator[PromptBatch]:
        """Batches of this process's share of the training prompts, ``ppo.steps`` of them."""
        for step in range(self.step_count, self.ppo.steps):
            yield self.batch_for_step(step)

    def batch_for_step(self, step: int) -> PromptBatch:
        """A pure function of (seed, step): a resumed run sees the same batches. Each prompt
        comes ``ppo.samples_per_prompt`` times in a row (a group), ``batch_size`` in all."""
        k = self.ppo.samples_per_prompt
        distinct = batch_indices(
            len(self.train_prompts), self.ppo.batch_size // k, step, self.ppo.seed
        )
        indices = [i for i in distinct for _ in range(k)]
        prompts: list[Prompt] = [
            self.train_prompts[i]
            for i in distributed.contiguous_share(indices, self.rank, self.world)
        ]
        return PromptBatch(
            query=[p.text for p in prompts], input_ids=[p.input_ids for p in prompts]
        )

    def generate(
        self,
        query_tensors: list[torch.Tensor] | torch.Tensor,
        return_prompt: bool = False,
        length_sampler=None,
        lengths: list[int] | None = None,
        **generation_kwargs,
    ) -> list[torch.Tensor]:
        """Sample responses for a batch of queries (eval mode, the whole batch at once).

        ``generation_kwargs`` override ``config.generation`` for this call (``max_new_tokens``,
        ``top_k``, ...); ``length_sampler`` (classic) or ``lengths`` cap each response.
        """
        start = time.perf_counter()
        queries = (
            [query_tensors]
            if torch.is_tensor(query_tensors) and query_tensors.dim() == 1
            else list(query_tensors)
        )
        queries = [q.detach().cpu().long() for q in queries]
        gen = self.config.generation.model_copy(update=_generation_overrides(generation_kwargs))
        if length_sampler is not None:
            lengths = [int(length_sampler()) for _ in queries]
        if lengths is None and gen.response_tokens is not None:
            lengths = sample_lengths(
                gen.response_tokens, len(queries), self.ppo.seed, self.step_count
            )
        with distributed.full_parameters(self.accelerator, self.model) as module:
            sampled = rollout_lib.generate(
                module.lm,
                queries,
                gen,
                self.pad_id,
                self.eos_ids,
                lengths,
                self.policy.seq2seq,
                value_head=module.v_head,
                sampler=self.sampler,
            )
        self._sampled = (queries, sampled)
        responses = sampled.responses
        self._timings["rollout"] = self._timings.get("rollout", 0.0) + time.perf_counter() - start
        if return_prompt and not self.policy.seq2seq:
            return [torch.cat([q, r]) for q, r in zip(queries, responses, strict=True)]
        return responses

    def decode(self, responses: list[torch.Tensor]) -> list[str]:
        return self.tokenizer.batch_decode(responses, skip_special_tokens=True)

    def step(
        self,
        queries: list[torch.Tensor],
        responses: list[torch.Tensor],
        scores: list[float] | list[torch.Tensor] | torch.Tensor,
    ) -> dict[str, float]:
        """One PPO step on given (query, response, score) triples; returns the stats.

        With ``ppo.samples_per_prompt`` k > 1 the batch comes in groups: k consecutive
        responses to the same query, as ``dataloader`` yields them.
        """
        start = time.perf_counter()
        scores = self._validate_scores(scores, len(responses))
        self._check_groups(queries)
        valid, skipped = self._mask_nonfinite(scores)
        # 1. old logprobs, values and reference logprobs in batched forwards
        rollout = self._exclude(self._score(queries, responses), valid)
        t_scored = time.perf_counter()
        self._check_finite("logprobs", rollout.logprobs, rollout.ref_logprobs)
        # 2. sequence scores -> per-token rewards with the KL penalty
        raw_scores = scores  # env/reward_* report what the reward said, before scaling
        scores = core.scale_scores(
            torch.where(valid, scores, 0.0).to(rollout.values.device),
            self.ppo.reward_scale,
            self.ppo.reward_clip,
        )
        mask = rollout.response_mask
        # 3. advantages and returns (GAE, or a group / batch baseline: ppo.advantage)
        estimate = compute_advantages(
            self.estimator,
            scores,
            rollout.logprobs,
            rollout.ref_logprobs,
            rollout.values,
            mask,
            self.kl_coef,
        )
        kl, penalty, rewards = estimate.kl, estimate.penalty, estimate.rewards
        advantages, returns, non_score = estimate.advantages, estimate.returns, estimate.non_score
        # 4. minibatch epochs
        update = self._update(rollout, advantages, returns)
        # 5. KL controller, on summed k1 whatever estimator shapes the penalty
        mean_kl = self._global_mean(sequence_sum(kl, mask), valid)
        if self.ppo.adaptive_kl:
            self.kl_coef = core.adaptive_kl_update(
                self.kl_coef, mean_kl, self.ppo.target_kl, self.ppo.batch_size, self.ppo.horizon
            )
        # 6. stats, each next to what it describes
        end = time.perf_counter()
        self._timings["rollout"] = self._timings.get("rollout", 0.0) + t_scored - start
        seconds = (
            self._timings.get("rollout", 0.0) + self._timings.get("reward", 0.0) + end - t_scored
        )
        n_samples = len(responses) * self.world
        n_tokens = self._global_mean(mask.sum(1).float(), valid) * n_samples
        all_scores = self.accelerator.gather(
            raw_scores.float().contiguous().to(self.accelerator.device)
        )
        all_scores = all_scores[torch.isfinite(all_scores)]
        stats = StepStats(
            kl=mean_kl,
            kl_penalty=self._global_mean(sequence_sum(penalty, mask), valid),
            kl_coef=self.kl_coef,
            entropy=self._global_mean(-sequence_sum(rollout.logprobs, mask), valid),
            reward_mean=float(all_scores.mean()),
            reward_std=float(all_scores.std()) if len(all_scores) > 1 else 0.0,
            score_mean=self._global_mean(sequence_sum(rewards, mask), valid),
            returns_mean=float(masked_mean(returns, mask)),
            advantages_mean=float(masked_mean(advantages, mask)),
            response_length=self._global_mean(mask.sum(1).float(), valid),
            skipped_nonfinite=skipped,
            time_rollout=self._timings.get("rollout", 0.0),
            time_reward=self._timings.get("reward", 0.0),
            time_update=end - t_scored,
            samples_per_s=n_samples / seconds,
            tokens_per_s=n_tokens / seconds,
            **update,
            **self._critic_stats(rollout, returns),
        )
        stats.extra["objective/non_score_reward"] = self._global_mean(
            sequence_sum(non_score, mask), valid
        )
        self._timings = {}
        self.step_count += 1
        self._check_kl(mean_kl)
        self.last_stats = stats.to_dict()
        return dict(self.last_stats)

    def log_stats(
        self,
        stats: dict[str, float],
        batch: PromptBatch | dict,
        rewards,
        responses: list[str] | None = None,
    ) -> None:
        """Write the step's stats (metrics.jsonl, trackers) and a few samples (samples.jsonl)."""
        step = self.step_count - 1
        if self.run is not None:
            self.run.append(METRICS, [{"step": step, **stats}])
            n = self.config.run.log_samples
            texts = (
                responses
                if responses is not None
                else batch.get("response")
                if isinstance(batch, dict)
                else None
            )
            if n and texts is not None:
                rows = [
                    {"step": step, "prompt": q, "response": r, "reward": float(s)}
                    for q, r, s in list(zip(batch["query"], texts, _floats(rewards), strict=False))[
                        :n
                    ]
                ]
                self.run.append(SAMPLES, rows)
                table = [[r["prompt"], r["response"], r["reward"]] for r in rows]
                distributed.log_table(
                    self.accelerator, "samples", ["prompt", "response", "reward"], table, step
                )
        if self.accelerator.trackers:
            self.accelerator.log({k: v for k, v in stats.items() if _is_number(v)}, step=step)

    # -- the loop from the config ----------------------------------------------------

    def train(self, progress=None) -> list[dict[str, float]]:
        """Run ``ppo.steps`` steps: generate, score with the recipe's reward, step, log, save."""
        history = []
        with graceful_interrupt(self.request_stop):
            for batch in self.dataloader:
                self._seed_step(self.step_count)
                responses = self.generate(batch.input_ids)
                texts = self.decode(responses)
                start = time.perf_counter()
                scores = self.reward(batch.query, texts)
                self._timings["reward"] = time.perf_counter() - start
                stats = self.step(batch.input_ids, responses, scores)
                stats |= self._reward_terms()
                self.log_stats(stats, batch, scores, texts)
                history.append(stats)
                if progress is not None:
                    progress(self.step_count, stats)
                if self._any_rank(self._stop_requested):
                    self.save_checkpoint()
                    raise Interrupted(self.step_count)
                if self._save_due():
                    self.save_checkpoint()
        if self._saved_step != self.step_count:
            self.save_checkpoint()  # the end of the run, unless the loop just saved it
        self.save_final()
        return history

    def _save_due(self) -> bool:
        """Every ``run.save_every`` steps, or once ``run.save_every_minutes`` have passed since
        the last save, whichever comes first; every rank takes the same decision."""
        run = self.config.run
        by_steps = bool(run.save_every) and self.step_count % run.save_every == 0
        elapsed = time.monotonic() - self._last_save
        by_time = bool(run.save_every_minutes) and elapsed >= run.save_every_minutes * 60
        return self._any_rank(by_steps or by_time)

    def _seed_step(self, step: int) -> None:
        """Every step draws from RNGs seeded by (seed, step, rank): resume is exact."""
        seed = (self.ppo.seed * 1_000_003 + step * 7919 + self.accelerator.process_index) % 2**31
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _reward_terms(self) -> dict[str, float]:
        terms = getattr(self.reward, "terms", [])
        if len(terms) < 2:
            return {}
        return {
            f"env/reward/{name}": float(np.mean(values))
            for name, values in getattr(self.reward, "last_terms", {}).items()
        }

    # -- the pieces of step() --------------------------------------------------------

    def _validate_scores(self, scores, n: int) -> torch.Tensor:
        if torch.is_tensor(scores):
            scores = scores.detach().flatten().cpu().tolist()
        else:
            scores = [float(s.item()) if torch.is_tensor(s) else s for s in scores]
        return torch.tensor(check_scores("scores", scores, n), dtype=torch.float32)

    def _mask_nonfinite(self, scores: torch.Tensor) -> tuple[torch.Tensor, int]:
        """NaN/Inf scores stop the run, or (``ppo.skip_nonfinite_rewards``) their samples stay
        in the batch with every token masked out of the loss and the stats: each process
        keeps the same number of samples, minibatches and gathered lengths. Returns (valid
        (B,), how many were bad on all processes)."""
        valid = torch.isfinite(scores)
        k = self.ppo.samples_per_prompt
        if k > 1:  # a group's baseline needs every member: mask the whole group
            valid = valid.view(-1, k).all(1).repeat_interleave(k)
        total = len(scores) * self.world
        n_bad = round(self._global_mean((~valid).float()) * total)
        if n_bad and not self.ppo.skip_nonfinite_rewards:
            raise NonFiniteError(
                f"step {self.step_count}: reward returned {n_bad} non-finite score(s) "
                "(NaN/Inf); fix the reward or set ppo.skip_nonfinite_rewards=true"
            )
        if n_bad == total:
            raise NonFiniteError(
                f"step {self.step_count}: every reward score is NaN/Inf; nothing to train on"
            )
        return valid, n_bad

    @staticmethod
    def _exclude(rollout: Rollout, valid: torch.Tensor) -> Rollout:
        """Masks the response tokens of samples that are not ``valid`` (B,) out of everything."""
        if not valid.all():
            rollout.response_mask = rollout.response_mask * valid.to(rollout.response_mask)[:, None]
        return rollout

    def _critic_stats(self, rollout: Rollout, returns: torch.Tensor) -> dict[str, float]:
        """The value head's prediction and fit; nothing when no value head trains."""
        if not self.estimator.uses_critic:
            return {}
        mask = rollout.response_mask
        return {
            "vpred": float(masked_mean(rollout.values, mask)),
            "explained_variance": core.explained_variance(rollout.values, returns, mask),
        }

    def _check_groups(self, queries: list[torch.Tensor]) -> None:
        """k = ``ppo.samples_per_prompt`` consecutive responses must share their query."""
        k = self.ppo.samples_per_prompt
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

    def _score(self, queries: list[torch.Tensor], responses: list[torch.Tensor]) -> Rollout:
        queries = [q.detach().cpu().long() for q in queries]
        responses = [r.detach().cpu().long() for r in responses]
        if any(len(r) == 0 for r in responses):
            raise RewardtuneError("step(): every response needs at least one token")
        chunk = max(self.ppo.mini_batch_size, 16)
        sampled = self._reusable_sample(queries, responses)
        with distributed.full_parameters(self.accelerator, self.model) as module:
            return rollout_lib.score(
                module, self.policy.reference, queries, responses, self.pad_id, chunk, sampled
            )

    def _reusable_sample(self, queries, responses) -> rollout_lib.Sampled | None:
        """The last generate()'s logprobs and values, if step() got exactly what it sampled
        (and the weights have not moved since)."""
        cached, self._sampled = self._sampled, None
        if cached is None:
            return None
        old_queries, sampled = cached
        same = len(old_queries) == len(queries) and all(
            torch.equal(a, b)
            for a, b in zip(old_queries + sampled.responses, queries + responses, strict=True)
        )
        return sampled if same else None

    def _update(self, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> dict:
        """``ppo_epochs`` passes over shuffled minibatches of this process's samples, without
        dropout (as sampling): until the weights move, the ratio is exactly 1."""
        data = {
            "query_ids": rollout.query_ids,
            "query_mask": rollout.query_mask,
            "response_ids": rollout.response_ids,
            "response_mask": rollout.response_mask,
            "old_logprobs": rollout.logprobs,
            "old_values": rollout.values,
            "ref_logprobs": rollout.ref_logprobs,
            "advantages": advantages,
            "returns": returns,
        }
        totals: dict[str, list[float]] = {}
        skipped, stopped = 0, False
        with rollout_lib.eval_mode(self.model):
            for epoch in self._epochs(data, len(rollout)):
                for batch in epoch:
                    stats = self._minibatch_step(batch)
                    skipped += int(stats.pop("skipped"))
                    for key, value in stats.items():
                        totals.setdefault(key, []).append(value)
                if self._stop_early(stats["approxkl"]):
                    stopped = True
                    break
        means = {key: self._global_mean(torch.tensor(values)) for key, values in totals.items()}
        return means | {"early_stopped": float(stopped), "skipped_minibatches": skipped}

    def _epochs(self, data: dict, n: int) -> Iterator[Iterator[dict]]:
        """``ppo_epochs`` times: this process's samples in a new order, as minibatches of
        ``mini_batch_size / world``."""
        mini = max(1, self.ppo.mini_batch_size // self.world)
        generator = torch.Generator().manual_seed(self.ppo.seed + self.step_count)
        for _ in range(self.ppo.ppo_epochs):
            order = torch.randperm(n, generator=generator)
            yield (
                rollout_lib.trim_padding({k: v[index.to(v.device)] for k, v in data.items()})
                for index in order.split(mini)
            )

    def _stop_early(self, approxkl: float) -> bool:
        """``ppo.early_stopping``, checked after each epoch on its last minibatch as classic TRL
        did; decided on the mean over processes, so all stop together."""
        if not self.ppo.early_stopping:
            return False
        mean = self._global_mean(torch.tensor([approxkl]))
        return core.should_stop_early(mean, self.ppo.target_kl_early)

    def _skip_minibatch(self, logprobs, old_logprobs, mask) -> bool:
        """``ppo.ratio_threshold``: decided on the mean over processes, so all skip together."""
        if self.ppo.ratio_threshold is None:
            return False
        ratio = self._global_mean(core.mean_ratio(logprobs.detach(), old_logprobs, mask))
        return core.should_skip_minibatch(ratio, self.ppo.ratio_threshold)

    def _minibatch_step(self, batch: dict) -> dict[str, float]:
        mask = batch["response_mask"]
        logits, values = self.model(
            batch["query_ids"], batch["query_mask"], batch["response_ids"], mask
        )
        logprobs = logprobs_from_logits(logits, batch["response_ids"])
        pg_loss, clipfrac, approxkl = core.policy_loss(
            logprobs, batch["old_logprobs"], batch["advantages"], mask, self.ppo.cliprange
        )
        loss, terms = pg_loss, {}
        if self.estimator.uses_critic:  # critic-free estimators have no value loss
            vf_loss, vf_clipfrac = core.value_loss(
                values.float(),
                batch["old_values"],
                batch["returns"],
                mask,
                self.ppo.cliprange_value,
            )
            loss = loss + self.ppo.vf_coef * vf_loss
            terms = {"value_loss": vf_loss.item(), "value_clipfrac": vf_clipfrac.item()}
        if self.estimator.kl_in == "loss":
            kl_term = kl_loss(logprobs, batch["ref_logprobs"], mask)
            loss = loss + self.kl_coef * kl_term
            terms["kl_loss"] = kl_term.item()
        self._check_finite("loss", loss)
        skip = self._skip_minibatch(logprobs, batch["old_logprobs"], mask)
        grad_norm = 0.0 if skip else self._optimizer_step(loss)
        return {
            "policy_loss": pg_loss.item(),
            "total_loss": loss.item(),
            "clipfrac": clipfrac.item(),
            "approxkl": approxkl.item(),
            "grad_norm": grad_norm,
            "skipped": float(skip),
            **terms,
        }

    def _optimizer_step(self, loss: torch.Tensor) -> float:
        """Backward, clip, step; returns the gradient norm."""
        self.accelerator.backward(loss)
        grad_norm = self._clip_gradients()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _clip_gradients(self) -> float:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.ppo.max_grad_norm is not None:
            norm = self.accelerator.clip_grad_norm_(params, self.ppo.max_grad_norm)
            if norm is None:  # DeepSpeed clips inside its own step and reports nothing here
                return 0.0
        else:
            norm = torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in params if p.grad is not None])
            )
        norm = float(norm)
        if not math.isfinite(norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(
                f"step {self.step_count}: gradients are NaN/Inf; lower ppo.learning_rate or set "
                "ppo.reward_clip"
            )
        return norm

    def _check_finite(self, what: str, *tensors: torch.Tensor) -> None:
        for tensor in tensors:
            if not is_finite(tensor):
                raise NonFiniteError(
                    f"step {self.step_count}: {what} became NaN/Inf; the last good checkpoint is "
                    "kept; lower ppo.learning_rate or check the reward's scale"
                )

    def _check_kl(self, mean_kl: float) -> None:
        if self.ppo.max_kl is not None and mean_kl > self.ppo.max_kl:
            raise NonFiniteError(
                f"step {self.step_count - 1}: objective/kl = {mean_kl:.2f} exceeds ppo.max_kl = "
                f"{self.ppo.max_kl}; the policy ran away from the reference (raise init_kl_coef "
                "or lower learning_rate)"
            )

    def _any_rank(self, flag: bool) -> bool:
        """True on every process when it is true on any: a stop that reached one process
        (a signal sent to one pid) must stop all of them at the same step."""
        if self.world == 1:
            return flag
        return self._global_mean(torch.tensor([float(flag)])) > 0

    def _global_mean(self, values: torch.Tensor, valid: torch.Tensor | None = None) -> float:
        """Mean over every process's values, leaving out those where ``valid`` is False."""
        device = self.accelerator.device
        values = values.detach().float().reshape(-1).to(device)
        keep = torch.ones_like(values) if valid is None else valid.reshape(-1).to(values)
        totals = torch.stack([torch.where(keep > 0, values, 0.0).sum(), keep.sum()])
        if self.world > 1:
            totals = self.accelerator.gather(totals.reshape(1, 2)).sum(0)
        return float(totals[0] / totals[1]) if totals[1] > 0 else 0.0

    # -- checkpoints -----------------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        """Adapter/weights + value head (safetensors), optimizer, KL controller, step, RNG.

        Every rank takes part (gathering sharded weights is a collective); rank 0 writes.
        """
        self.accelerator.wait_for_everyone()
        state = distributed.full_state_dict(self.accelerator, self.model)
        shards = self._stage_optimizer_shards()
        path = None
        if self.run is not None:
            trainer_state = checkpoint.TrainerState(self.step_count, self.kl_coef, self.world)
            optimizer_state = self.optimizer.state_dict()
            path = self.run.save_checkpoint(
                self.step_count,
                lambda folder: checkpoint.write_checkpoint(
                    folder,
                    self.policy,
                    state,
                    optimizer_state,
                    trainer_state,
                    shards,
                    value_head=self.estimator.uses_critic,
                ),
                self.config.run.keep_checkpoints,
            )
        # every rank waits here: a rank that ran ahead would pair its next collective
        # (DDP's buffer broadcast) with this barrier and hang both
        self.accelerator.wait_for_everyone()
        self._last_save, self._saved_step = time.monotonic(), self.step_count
        return path

    def _stage_optimizer_shards(self) -> Path | None:
        """Under ZeRO/FSDP each rank holds its own optimizer shard: ranks > 0 write theirs
        beside the checkpoint, and rank 0 moves them in before the checkpoint is renamed
        into place (so a complete checkpoint always has every shard)."""
        if not distributed.optimizer_is_sharded(self.accelerator) or self.run_path is None:
            return None
        staging = self.run_path / CHECKPOINTS / f".shards-step-{self.step_count}"
        if self.rank > 0:
            staging.mkdir(parents=True, exist_ok=True)
            torch.save(self.optimizer.state_dict(), staging / checkpoint.optimizer_file(self.rank))
        self.accelerator.wait_for_everyone()
        return staging

    def load_checkpoint(self, folder: Path) -> None:
        """Restore everything ``save_checkpoint`` wrote (a missing file says which)."""
        rank = self.rank if distributed.optimizer_is_sharded(self.accelerator) else 0
        state = checkpoint.read_checkpoint(
            folder, self.policy, self.optimizer, rank, self.world, self.estimator.uses_critic
        )
        self.step_count, self.kl_coef = state.step, state.kl_coef

    def save_final(self) -> Path | None:
        self.accelerator.wait_for_everyone()
        state = distributed.full_state_dict(self.accelerator, self.model)
        path = None
        if self.run is not None:
            path = self.run.save_final(
                lambda folder: checkpoint.write_final(
                    folder, self.policy, state, value_head=self.estimator.uses_critic
                )
            )
        self.accelerator.wait_for_everyone()
        return path

    def request_stop(self) -> None:
        self._stop_requested = True


# --- small helpers -------------------------------------------------------------------


def _generation_overrides(kwargs: dict) -> dict:
    known = {"max_new_tokens", "min_new_tokens", "do_sample", "top_k", "top_p", "temperature"}
    unknown = set(kwargs) - known - {"pad_token_id", "eos_token_id"}
    if unknown:
        raise RewardtuneError(f"generate(): unsupported argument(s) {', '.join(sorted(unknown))}")
    return {k: v for k, v in kwargs.items() if k in known}


def _estimator(ppo) -> Estimator:
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


def _floats(values) -> list[float]:
    if torch.is_tensor(values):
        return values.flatten().tolist()
    return [float(v.item()) if torch.is_tensor(v) else float(v) for v in values]


def _is_number(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
