"""Records end to end and no hidden state: each stat key defined once, a step's record from its
typed parts, rewards that return their terms, batches changed by returning new ones, and no
process-wide side effects (global RNGs, matplotlib's backend) from the library."""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
import yaml

from conftest import tiny_overrides
from rewardtune import PPOTrainer, load_config
from rewardtune.rewards import Scores, WeightedReward
from rewardtune.sampling.rollout import Generation
from rewardtune.training import guards
from rewardtune.types import (
    STAT,
    STAT_PARTS,
    CriticStats,
    ObjectiveStats,
    Rollout,
    StepStats,
    TimingStats,
    UpdateStats,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "rewardtune"


def _keys() -> list[str]:
    return [f.metadata["key"] for part in STAT_PARTS for f in fields(part)]


def _string_constants() -> list[str]:
    """Every string literal of the package's code, docstrings left out."""
    found = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        found += [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ]
    return found


def test_every_stat_key_is_written_once_in_the_code():
    keys = _keys()
    assert len(keys) == len(set(keys))
    constants = _string_constants()
    for key in keys:
        assert constants.count(key) == 1, key
    assert STAT.approxkl == "ppo/policy/approxkl" and STAT.reward_mean == "env/reward_mean"


def test_a_step_record_flattens_its_parts_and_leaves_out_what_was_not_measured():
    update = UpdateStats(policy_loss=0.5, kl_loss=None, value_loss=None)
    record = StepStats(ObjectiveStats(kl=1.0), update, None, TimingStats(), {"a": 2.0, "b": 3.0})
    flat = record.to_dict()
    assert flat["objective/kl"] == 1.0 and flat["ppo/loss/policy"] == 0.5
    assert "ppo/loss/value" not in flat and "ppo/loss/kl" not in flat  # not measured
    assert "ppo/val/vpred" not in flat  # no critic part
    assert flat["env/reward/a"] == 2.0 and flat["env/reward/b"] == 3.0
    with_critic = StepStats(ObjectiveStats(), update, CriticStats(vpred=0.25), TimingStats())
    assert with_critic.to_dict()["ppo/val/vpred"] == 0.25


def test_a_weighted_reward_returns_its_total_and_each_term():
    class Length:
        name = "length"

        def __call__(self, prompts, responses):
            return [float(len(r)) for r in responses]

    class One:
        name = "one"

        def __call__(self, prompts, responses):
            return [1.0] * len(responses)

    reward = WeightedReward([(Length(), 0.5), (One(), 2.0)])
    scores = reward.score(["p", "p"], ["ab", "abcd"])
    assert scores == Scores([3.0, 4.0], {"length": [2.0, 4.0], "one": [1.0, 1.0]})
    assert reward(["p"], ["ab"]) == [3.0]  # the Reward protocol: the total alone
    assert not hasattr(reward, "last_terms")


def test_exclude_returns_a_new_rollout_and_leaves_the_given_one_as_it_was():
    ids = torch.tensor([[1, 2], [3, 4]])
    zeros = torch.zeros(2, 2)
    rollout = Rollout(ids, torch.ones_like(ids), ids, torch.ones_like(ids), zeros, zeros, zeros)
    masked = guards.exclude(rollout, torch.tensor([True, False]))
    assert masked.response_mask.tolist() == [[1, 1], [0, 0]]
    assert rollout.response_mask.tolist() == [[1, 1], [1, 1]]


def _trainer(tmp_path, tiny_llama, prompts_file) -> PPOTrainer:
    recipe = tmp_path / "records.yaml"
    recipe.write_text(yaml.safe_dump({"reward": [{"type": "vader"}]}))
    return PPOTrainer(load_config(str(recipe), tiny_overrides(tiny_llama, prompts_file)))


def test_the_trainer_leaves_the_callers_global_rngs_as_they_were(
    tmp_path, tiny_llama, prompts_file
):
    torch.manual_seed(1234)
    random.seed(5)
    np.random.seed(6)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    trainer = _trainer(tmp_path, tiny_llama, prompts_file)
    history = trainer.train()
    batch = trainer.batch_for_step(0)
    trainer.generate(batch.input_ids)
    assert len(history) == 2
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    assert (np.random.get_state()[1] == before[2]).all()


def test_the_classic_step_uses_a_generation_it_is_given_and_recomputes_plain_responses(
    tmp_path, tiny_llama, prompts_file
):
    trainer = _trainer(tmp_path, tiny_llama, prompts_file)
    batch = trainer.batch_for_step(0)
    with trainer.sampling_rng():
        generation = trainer.sample(batch.input_ids)
    assert isinstance(generation, Generation) and generation.logprobs is not None
    assert generation.seconds > 0
    scores = [float(len(r)) for r in generation.responses]
    rollout = trainer._score(batch.input_ids, generation)
    recomputed = trainer._score(batch.input_ids, Generation(generation.responses))
    mask = rollout.response_mask.bool()
    # the sampling passes' logprobs, and the same numbers recomputed by one forward pass
    torch.testing.assert_close(rollout.logprobs[mask], recomputed.logprobs[mask])
    stats = trainer.step(batch.input_ids, generation, scores)
    assert stats == trainer.last_stats and stats[STAT.time_rollout] >= generation.seconds


def test_importing_and_drawing_the_report_figures_keeps_matplotlibs_backend():
    code = (
        "import matplotlib; matplotlib.use('svg');"
        "from rewardtune.report import figures;"
        "rows = [{'step': i, 'env/reward_mean': i * 0.1, 'env/reward_std': 0.1} for i in range(3)];"
        "assert figures.training_figure(rows);"
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "svg"


def test_loading_a_policy_leaves_the_allocator_alone_unless_asked():
    source = (SRC / "models" / "policy.py").read_text() + (
        SRC / "training" / "trainer.py"
    ).read_text()
    assert "keep_freed_memory" not in source and "enable_cpu_fast_paths" not in source
    cli = (SRC / "cli" / "__init__.py").read_text()
    assert "enable_cpu_fast_paths()" in cli
