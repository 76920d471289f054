"""The trainer's parts on their own: typed minibatches, means over processes, the step's timing, the
save schedule."""

from __future__ import annotations

import types

import pytest
import torch

from rewardtune.config import RunConfig
from rewardtune.distributed import any_rank, global_mean
from rewardtune.runs import checkpoints
from rewardtune.runs.checkpoints import TrainerCheckpoints
from rewardtune.training.step_stats import timing_stats
from rewardtune.types import Minibatch, Rollout

ONE_PROCESS = types.SimpleNamespace(device="cpu", num_processes=1)


def _rollout() -> Rollout:
    ids = torch.tensor([[1, 2], [3, 4]])
    return Rollout(
        query_ids=ids,
        query_mask=torch.ones_like(ids),
        response_ids=ids + 10,
        response_mask=torch.tensor([[1, 1], [1, 0]]),
        logprobs=torch.tensor([[-1.0, -2.0], [-3.0, 0.0]]),
        ref_logprobs=torch.tensor([[-1.5, -2.5], [-3.5, 0.0]]),
        values=torch.tensor([[0.1, 0.2], [0.3, 0.0]]),
    )


def test_a_minibatch_takes_old_logprobs_and_values_from_the_rollout_and_indexes_every_field():
    rollout = _rollout()
    advantages, returns = torch.tensor([[5.0, 6.0], [7.0, 0.0]]), torch.tensor([[8.0, 9.0], [1, 0]])
    batch = Minibatch.from_rollout(rollout, advantages, returns)
    assert torch.equal(batch.old_logprobs, rollout.logprobs)
    assert torch.equal(batch.old_values, rollout.values)
    assert torch.equal(batch.ref_logprobs, rollout.ref_logprobs)
    row = batch.index(torch.tensor([1])).trim()
    assert row.response_ids.tolist() == [[13]]  # the second row's one real response token
    assert row.advantages.tolist() == [[7.0]] and row.returns.tolist() == [[1.0]]
    assert row.old_logprobs.tolist() == [[-3.0]] and row.query_ids.tolist() == [[3, 4]]


def test_global_mean_leaves_out_invalid_samples_and_is_zero_when_none_is_valid():
    values = torch.tensor([1.0, 2.0, 6.0])
    assert global_mean(ONE_PROCESS, values) == pytest.approx(3.0)
    assert global_mean(ONE_PROCESS, values, torch.tensor([True, False, True])) == 3.5
    assert global_mean(ONE_PROCESS, values, torch.tensor([False] * 3)) == 0.0
    assert any_rank(ONE_PROCESS, True) and not any_rank(ONE_PROCESS, False)


def test_step_timing_is_passed_explicitly_and_throughput_counts_every_stage():
    # the seconds of each stage travel in the records (Generation.seconds, reward_seconds);
    # a stage not measured counts 0 (a classic loop that does not time its reward)
    timing = timing_stats(1.75, 2.0, 0.25, n_samples=8, length=5.0)
    assert (timing.time_rollout, timing.time_reward, timing.time_update) == (1.75, 2.0, 0.25)
    assert timing.samples_per_s == 2.0 and timing.tokens_per_s == 10.0
    assert timing_stats(1.0, 0.0, 1.0, 4, 1.0).time_reward == 0.0


def test_a_save_is_due_every_save_every_steps_or_after_save_every_minutes(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: clock[0])
    saves = TrainerCheckpoints(ONE_PROCESS, None, None, None, RunConfig(save_every=3), True)
    assert [step for step in range(1, 8) if saves.due(step)] == [3, 6]
    timed = TrainerCheckpoints(
        ONE_PROCESS, None, None, None, RunConfig(save_every=0, save_every_minutes=2), True
    )
    assert not timed.due(1)
    clock[0] += 119.0
    assert not timed.due(2)
    clock[0] += 1.0
    assert timed.due(3)
