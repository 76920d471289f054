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

import contextlib
import random
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from rewardtune import distributed
from rewardtune.config import Config
from rewardtune.core.advantages import Advantages, compute_advantages
from rewardtune.core.ppo import adaptive_kl_update, scale_scores
from rewardtune.core.tensors import sequence_sum
from rewardtune.data.columns import column_lists, needed_columns
from rewardtune.data.prompts import batch_indices, load_prompts, sample_lengths
from rewardtune.distributed import any_rank, global_mean
from rewardtune.models.policy import Policy, count_parameters, load_policy
from rewardtune.rewards import Scores, WeightedReward, build_reward
from rewardtune.runs import checkpoints
from rewardtune.runs.checkpoints import TrainerCheckpoints
from rewardtune.runs.rundir import RunDir
from rewardtune.sampling import rollout as rollout_lib
from rewardtune.sampling.rollout import Generation
from rewardtune.training import guards, step_stats
from rewardtune.training.dynamic_sampling import Drawn, sample_groups_with_signal
from rewardtune.training.progress_bar import StepProgress
from rewardtune.training.signals import Interrupted, graceful_interrupt
from rewardtune.training.step_log import log_step, term_means
from rewardtune.training.trainer_summary import summary_html, summary_text
from rewardtune.training.update import Updater, estimator, truncated_responses
from rewardtune.types import (
    GroupFilterStats,
    Minibatch,
    Prompt,
    PromptBatch,
    RewardtuneError,
    Rollout,
    StepStats,
)


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
        self.config, self.ppo = config, config.ppo
        self.accelerator = accelerator or distributed.make_accelerator()
        self.is_main = self.accelerator.is_main_process
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.estimator = estimator(self.ppo)
        distributed.check_divisible(
            self.ppo.batch_size, self.ppo.mini_batch_size, self.world, self.ppo.samples_per_prompt
        )
        distributed.check_engine(self.accelerator, config.model.quantization)
        # the value head's and LoRA's initial weights are drawn from ppo.seed; the global RNGs
        # are left as the caller had them (``own_rng``)
        outer = checkpoints.rng_state()
        torch.manual_seed(self.ppo.seed)
        self.policy = policy or load_policy(config.model, self.accelerator.device)
        self.tokenizer = self.policy.tokenizer
        self.reward = reward if reward is not None else build_reward(config.reward)
        if not self.estimator.uses_critic:  # critic-free: the value head neither trains nor saves
            self.policy.module.v_head.requires_grad_(False)
        self.run = run_dir if self.is_main else None
        self.run_path = run_dir.path if run_dir is not None else None  # every rank knows it
        self.train_prompts, self.eval_prompts = self._load_prompts(config)
        self.model, self.optimizer = self._prepare()
        self.kl_coef, self.step_count = self.ppo.init_kl_coef, 0
        self.eos_ids = self.policy.eos_token_ids(config.data.chat)
        self.pad_id = self.tokenizer.pad_token_id
        self.updater = Updater(self.accelerator, self.model, self.optimizer, config, self.estimator)
        self.checkpoints = TrainerCheckpoints(
            self.accelerator,
            self.model,
            self.optimizer,
            self.policy,
            config.run,
            self.estimator.uses_critic,
        )
        self._stop_requested = False
        self.sampler = rollout_lib.Sampler()  # engine state (CUDA graphs) lives across steps
        self.parameters = count_parameters(self.policy)
        self.last_stats: dict[str, float] = {}  # the last step()'s stats
        # the RNG stream of the classic loop's generate(): where the seeding above left it
        self._rng = checkpoints.rng_state()
        checkpoints.set_rng_state(outer)

    def _load_prompts(self, config: Config) -> tuple[list[Prompt], list[Prompt]]:
        """(train, held-out) prompts with their rows' columns (checked: rewards.needs_columns)"""
        budget = self.policy.prompt_budget(config.generation.longest)
        needs = needed_columns(config)
        return load_prompts(config.data, self.tokenizer, max_tokens=budget, needs=needs)

    def _prepare(self) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """AdamW on the trainable parameters; both wrapped for this process (DDP, ZeRO, ...)."""

        def adamw(module: torch.nn.Module) -> torch.optim.Optimizer:
            params = [p for p in module.parameters() if p.requires_grad]
            return torch.optim.AdamW(params, lr=self.ppo.learning_rate, weight_decay=0.0)

        distributed.prepare_engine(self.accelerator, self.ppo.mini_batch_size // self.world)
        return distributed.prepare(self.accelerator, self.policy.module, adamw)

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

    def batch_for_step(self, step: int, draw: int = 0) -> PromptBatch:
        """A pure function of (seed, step): a resumed run sees the same batches. Each prompt
        comes ``ppo.samples_per_prompt`` times in a row (a group), ``batch_size`` in all.
        ``draw`` > 0: the extra prompts of ``ppo.filter_groups``' round ``draw``, from an
        order of their own (seeded beyond every valid ``ppo.seed``)."""
        k = self.ppo.samples_per_prompt
        seed = self.ppo.seed + draw * 2**32
        distinct = batch_indices(len(self.train_prompts), self.ppo.batch_size // k, step, seed)
        indices = [i for i in distinct for _ in range(k)]
        prompts: list[Prompt] = [
            self.train_prompts[i]
            for i in distributed.contiguous_share(indices, self.rank, self.world)
        ]
        return PromptBatch(
            query=[p.text for p in prompts],
            input_ids=[p.input_ids for p in prompts],
            columns=column_lists(prompts),
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
        ``top_k``, ...); ``length_sampler`` (classic) or ``lengths`` cap each response. The
        logprobs of the ratio and the KL stay at ``config.generation``'s temperature (an
        override of ``temperature`` changes what is drawn, not what is scored). The
        responses of ``sample``: pass its ``Generation`` to ``step`` instead of the responses
        to reuse the sampling passes' logprobs and values.
        """
        with self.sampling_rng():
            generation = self.sample(query_tensors, length_sampler, lengths, **generation_kwargs)
        if return_prompt and not self.policy.seq2seq:
            return [
                torch.cat([q.detach().cpu().long(), r])
                for q, r in zip(_as_list(query_tensors), generation.responses, strict=True)
            ]
        return generation.responses

    def sampling_rng(self):
        """Context: the RNGs of the classic loop's stream (seeded from ``ppo.seed`` when the
        trainer was built, continued by each ``generate``), the caller's left as they were."""
        return own_rng(self, "_rng")

    def sample(
        self,
        query_tensors: list[torch.Tensor] | torch.Tensor,
        length_sampler=None,
        lengths: list[int] | None = None,
        **generation_kwargs,
    ) -> Generation:
        """``generate``'s record: responses with their sampling logprobs and values, and the
        seconds it took. Draws from torch's global RNG as it is (``train`` seeds it per step)."""
        start = time.perf_counter()
        queries = [q.detach().cpu().long() for q in _as_list(query_tensors)]
        gen = self.config.generation.model_copy(
            update=guards.generation_overrides(generation_kwargs)
        )
        if length_sampler is not None:
            lengths = [int(length_sampler()) for _ in queries]
        if lengths is None and gen.response_tokens is not None:
            lengths = sample_lengths(
                gen.response_tokens, len(queries), self.ppo.seed, self.step_count
            )
        with distributed.full_parameters(self.accelerator, self.model) as module:
            generation = rollout_lib.generate(
                module.lm,
                queries,
                gen,
                self.pad_id,
                self.eos_ids,
                lengths,
                self.policy.seq2seq,
                value_head=module.v_head,
                sampler=self.sampler,
                logprob_temperature=rollout_lib.sampling_temperature(self.config.generation),
            )
        generation.seconds = time.perf_counter() - start
        return generation

    def decode(self, responses: list[torch.Tensor]) -> list[str]:
        return self.tokenizer.batch_decode(responses, skip_special_tokens=True)

    def step(
        self,
        queries: list[torch.Tensor],
        responses: list[torch.Tensor] | Generation,
        scores: list[float] | list[torch.Tensor] | torch.Tensor,
    ) -> dict[str, float]:
        """One PPO step on given (query, response, score) triples; returns the stats as
        classic TRL's flat dict (``StepStats.to_dict``).

        ``responses``: token tensors (their logprobs and values are computed here), or the
        ``Generation`` that ``sample`` returned (its logprobs and values are used). With
        ``ppo.samples_per_prompt`` k > 1 the batch comes in groups: k consecutive responses
        to the same query, as ``dataloader`` yields them.
        """
        generation = responses if isinstance(responses, Generation) else Generation(responses)
        self.last_stats = self.ppo_step(queries, generation, scores).to_dict()
        return dict(self.last_stats)

    def ppo_step(
        self,
        queries: list[torch.Tensor],
        generation: Generation,
        scores: list[float] | list[torch.Tensor] | torch.Tensor | Scores,
        reward_seconds: float = 0.0,
    ) -> StepStats:
        """One PPO step; returns its record. ``reward_seconds``: how long scoring took."""
        start = time.perf_counter()
        terms = scores.terms if isinstance(scores, Scores) else {}
        # 0. checked scores; non-finite ones stop the run or mask their samples (valid)
        scores = guards.scores_tensor(
            scores.total if isinstance(scores, Scores) else scores, len(generation.responses)
        )
        guards.check_groups(queries, self.ppo.samples_per_prompt)
        valid, skipped = guards.mask_nonfinite(self.accelerator, scores, self.ppo, self.step_count)
        # 1. old logprobs and values (unless sampling kept them) and reference logprobs
        rollout = guards.exclude(self._score(queries, generation), valid)
        scored = time.perf_counter()
        guards.check_finite(self.step_count, "logprobs", rollout.logprobs, rollout.ref_logprobs)
        # 2. scores -> per-token rewards with the KL penalty -> advantages and returns
        estimate = self._advantages(rollout, scores, valid)
        # 3. minibatch epochs (ppo.mask_truncated: no policy loss on truncated responses)
        truncated = truncated_responses(rollout, self.eos_ids) if self.ppo.mask_truncated else None
        loss_mask = rollout.response_mask * (~truncated)[:, None] if truncated is not None else None
        batch = Minibatch.from_rollout(rollout, estimate.advantages, estimate.returns, loss_mask)
        update = self.updater.update(batch, self.kl_coef, self.step_count)
        # 4. KL controller, on summed k1 whatever estimator shapes the penalty
        mean_kl = self._control_kl(sequence_sum(estimate.kl, rollout.response_mask), valid)
        # 5. the record, each part made next to what it describes
        objective = step_stats.objective_stats(
            self.accelerator, rollout, estimate, valid, scores, mean_kl, self.kl_coef, skipped
        )
        timing = step_stats.timing_stats(
            generation.seconds + (scored - start),
            reward_seconds,
            time.perf_counter() - scored,
            len(rollout) * self.world,
            objective.response_length,
        )
        critic = (
            step_stats.critic_stats(rollout, estimate.returns)
            if self.estimator.uses_critic
            else None
        )
        if truncated is not None:
            share = global_mean(self.accelerator, truncated.float(), valid)
            objective = replace(objective, truncated_masked=share)
        self.step_count += 1
        guards.check_kl(self.step_count - 1, mean_kl, self.ppo.max_kl)
        return StepStats(objective, update, critic, timing, term_means(terms))

    def _advantages(
        self, rollout: Rollout, scores: torch.Tensor, valid: torch.Tensor
    ) -> Advantages:
        """Scaled, clipped scores (0 where not ``valid``) -> advantages and returns with
        ``ppo.advantage``: GAE, or a group / batch baseline."""
        scores = scale_scores(
            torch.where(valid, scores, 0.0).to(rollout.values.device),
            self.ppo.reward_scale,
            self.ppo.reward_clip,
        )
        return compute_advantages(
            self.estimator,
            scores,
            rollout.logprobs,
            rollout.ref_logprobs,
            rollout.values,
            rollout.response_mask,
            self.kl_coef,
            all_reduce=distributed.all_reduce_sum(self.accelerator),
        )

    def _control_kl(self, summed_kl: torch.Tensor, valid: torch.Tensor) -> float:
        """The adaptive KL controller's update (``ppo.adaptive_kl``); returns objective/kl."""
        mean_kl = global_mean(self.accelerator, summed_kl, valid)
        if self.ppo.adaptive_kl:
            self.kl_coef = adaptive_kl_update(
                self.kl_coef, mean_kl, self.ppo.target_kl, self.ppo.batch_size, self.ppo.horizon
            )
        return mean_kl

    def log_stats(
        self,
        stats: dict[str, float],
        batch: PromptBatch | dict,
        rewards,
        responses: list[str] | None = None,
    ) -> None:
        """Write the step's stats (metrics.jsonl, trackers) and a few samples (samples.jsonl)."""
        texts = (
            responses
            if responses is not None
            else batch.get("response")
            if isinstance(batch, dict)
            else None
        )
        samples = (batch["query"] if texts is not None else [], texts, rewards)
        n = self.config.run.log_samples
        log_step(self.accelerator, self.run, self.step_count - 1, stats, samples, n)

    # -- the loop from the config ----------------------------------------------------

    def train(self, progress=None) -> list[dict[str, float]]:
        """Run ``ppo.steps`` steps: generate, score with the recipe's reward, step, log, save.
        ``progress``: a callback(step, stats), or True for a live bar (a widget in Jupyter)."""
        if progress is True:
            with StepProgress(self.ppo.steps, self.step_count, enabled=self.is_main) as update:
                return self.train(progress=update)
        history = []
        with graceful_interrupt(self.request_stop) as signals:
            for step in range(self.step_count, self.ppo.steps):
                drawn, filtered = self.sample_batch(step)
                batch, texts, scores = drawn.batch, drawn.texts, drawn.scores
                record = self.ppo_step(
                    batch.input_ids, drawn.generation, scores, drawn.reward_seconds
                )
                stats = replace(record, group_filter=filtered).to_dict()
                self.last_stats = dict(stats)
                self.log_stats(stats, batch, scores.total, texts)
                history.append(stats)
                if progress is not None:
                    progress(self.step_count, stats)
                if any_rank(self.accelerator, self._stop_requested):
                    self.save_checkpoint()
                    raise Interrupted(self.step_count, signals.signum)
                if self.checkpoints.due(self.step_count):
                    self.save_checkpoint()
            if self.checkpoints.saved_step != self.step_count:
                self.save_checkpoint()  # the end of the run, unless the loop just saved it
            self.save_final()  # a stop asked for during these saves waits for them to end
        if any_rank(self.accelerator, self._stop_requested):
            raise Interrupted(self.step_count, signals.signum)
        return history

    def sample_batch(self, step: int) -> tuple[Drawn, GroupFilterStats | None]:
        """``train()``'s prompts of ``step``, sampled and scored; under ``ppo.filter_groups``
        (DAPO's dynamic sampling) the groups that tie are dropped and more prompts drawn."""
        if not self.ppo.filter_groups:
            return self._draw(step, 0), None
        k = self.ppo.samples_per_prompt
        return sample_groups_with_signal(
            lambda draw: self._draw(step, draw),
            self.accelerator,
            k,
            self.ppo.batch_size // k // self.world,
            self.ppo.max_resample_rounds,
        )

    def _draw(self, step: int, draw: int) -> Drawn:
        """Draw ``draw`` of ``step``: its prompts, sampled on RNGs seeded from (seed, step,
        draw, rank), decoded and scored."""
        batch = self.batch_for_step(step, draw)
        with own_rng(step_seed(self.ppo.seed, step, self.rank + draw * self.world)):
            generation = self.sample(batch.input_ids)
            texts = self.decode(generation.responses)
            start = time.perf_counter()
            scores = self.reward.score(batch.query, texts, batch.columns)
        return Drawn(batch, generation, texts, scores, time.perf_counter() - start)

    # -- the pieces of step() --------------------------------------------------------

    def _score(self, queries: list[torch.Tensor], generation: Generation) -> Rollout:
        queries = [q.detach().cpu().long() for q in queries]
        responses = [r.detach().cpu().long() for r in generation.responses]
        if any(len(r) == 0 for r in responses):
            raise RewardtuneError("step(): every response needs at least one token")
        chunk = max(self.ppo.mini_batch_size, 16)
        kept = generation if generation.logprobs is not None else None
        with distributed.full_parameters(self.accelerator, self.model) as module:
            return rollout_lib.score(
                module,
                self.policy.reference,
                queries,
                responses,
                self.pad_id,
                chunk,
                kept,
                rollout_lib.sampling_temperature(self.config.generation),
            )

    # -- checkpoints -----------------------------------------------------------------

    def save_checkpoint(self) -> Path | None:
        """Adapter/weights + value head, optimizer, KL controller, step, RNG (every rank
        takes part; rank 0 writes)."""
        state = checkpoints.TrainerState(self.step_count, self.kl_coef, self.world)
        with self.sampling_rng():  # the checkpoint keeps the classic loop's stream
            return self.checkpoints.save(self.run, self.run_path, state)

    def load_checkpoint(self, folder: Path) -> None:
        """Restore everything ``save_checkpoint`` wrote (a missing file says which)."""
        with self.sampling_rng():
            state = self.checkpoints.load(folder)
        self.step_count, self.kl_coef = state.step, state.kl_coef

    def save_final(self) -> Path | None:
        return self.checkpoints.save_final(self.run)

    def request_stop(self) -> None:
        self._stop_requested = True


def _as_list(query_tensors: list[torch.Tensor] | torch.Tensor) -> list[torch.Tensor]:
    if torch.is_tensor(query_tensors) and query_tensors.dim() == 1:
        return [query_tensors]
    return list(query_tensors)


# -- randomness: every step draws from RNGs seeded by (seed, step, rank), so a resumed run
# samples exactly what the uninterrupted run sampled; the caller's global RNGs are left alone


def step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of python's, numpy's and torch's RNGs for one step of one process."""
    return (seed * 1_000_003 + step * 7919 + rank) % 2**31


@contextlib.contextmanager
def own_rng(owner: int | object, attribute: str | None = None):
    """Run a block on RNGs of its own, then give the global ones (python, numpy, torch, CUDA)
    back as they were. ``own_rng(seed)``: all seeded with ``seed``; ``own_rng(obj, "name")``:
    the states kept in ``obj.name``, saved back there afterwards (a stream that continues)."""
    outer = checkpoints.rng_state()
    if attribute is None:
        random.seed(owner)
        np.random.seed(owner)
        torch.manual_seed(owner)
    else:
        checkpoints.set_rng_state(getattr(owner, attribute))
    try:
        yield
    finally:
        if attribute is not None:
            setattr(owner, attribute, checkpoints.rng_state())
        checkpoints.set_rng_state(outer)
