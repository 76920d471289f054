"""Group sampling and critic-free estimators in the trainer: k copies of each prompt in a row,
no value loss, no value head trained or saved, exact resume, and a clear error for a classic
loop that passes responses out of their groups."""

from __future__ import annotations

import pytest
import torch
import yaml

from conftest import tiny_overrides
from rewardtune import PPOTrainer, load_config
from rewardtune.runs.rundir import RunDir
from rewardtune.types import RewardtuneError

K = 4


def make_trainer(tmp_path, tiny_llama, prompts_file, run: str | None = None, **extra):
    recipe = tmp_path / "group.yaml"
    recipe.write_text(yaml.safe_dump({"reward": [{"type": "vader"}]}))
    overrides = tiny_overrides(
        tiny_llama,
        prompts_file,
        steps=2,
        **{"ppo.batch_size": 8, "ppo.mini_batch_size": 4, "ppo.learning_rate": 1e-2} | extra,
    )
    config = load_config(str(recipe), overrides)
    run_dir = RunDir.create(tmp_path / run, config.to_yaml()) if run else None
    return PPOTrainer(config, run_dir=run_dir)


def test_each_prompt_comes_k_times_in_a_row_and_batches_stay_a_function_of_seed_and_step(
    tmp_path, tiny_llama, prompts_file
):
    grouped = make_trainer(tmp_path, tiny_llama, prompts_file, **{"ppo.samples_per_prompt": K})
    batch = grouped.batch_for_step(3)
    assert len(batch) == 8
    groups = [batch.query[i : i + K] for i in range(0, 8, K)]
    assert all(len(set(g)) == 1 for g in groups) and groups[0][0] != groups[1][0]
    assert batch.query == grouped.batch_for_step(3).query  # the same step, the same batch
    # k = 1 keeps the batches of earlier runs: 8 distinct prompts
    single = make_trainer(tmp_path, tiny_llama, prompts_file)
    assert len(set(single.batch_for_step(3).query)) == 8


def test_grpo_step_skips_the_value_loss_and_leaves_the_value_head_untrained_and_unsaved(
    tmp_path, tiny_llama, prompts_file
):
    trainer = make_trainer(
        tmp_path,
        tiny_llama,
        prompts_file,
        run="run",
        **{"ppo.samples_per_prompt": K, "ppo.advantage": "grpo", "ppo.kl_in": "loss"},
    )
    head = {k: v.clone() for k, v in trainer.policy.module.v_head.state_dict().items()}
    history = trainer.train()
    stats = history[-1]
    assert "ppo/loss/value" not in stats and "ppo/val/vpred" not in stats
    assert stats["ppo/loss/kl"] >= 0.0  # the k3 term of the loss is reported
    for key, value in trainer.policy.module.v_head.state_dict().items():
        assert torch.equal(value, head[key]), f"value head {key} moved"
    assert not (tmp_path / "run" / "final" / "value_head.safetensors").exists()
    checkpoint = tmp_path / "run" / "checkpoints" / "step-2"
    assert not (checkpoint / "value_head.safetensors").exists()
    # resume from step 1 reproduces step 2 without a value head file
    resumed = make_trainer(
        tmp_path,
        tiny_llama,
        prompts_file,
        **{"ppo.samples_per_prompt": K, "ppo.advantage": "grpo", "ppo.kl_in": "loss"},
    )
    resumed.load_checkpoint(tmp_path / "run" / "checkpoints" / "step-1")
    again = resumed.train()
    assert len(again) == 1
    assert again[0]["env/reward_mean"] == stats["env/reward_mean"]
    assert again[0]["ppo/loss/policy"] == pytest.approx(stats["ppo/loss/policy"], rel=1e-5)


def test_gae_still_trains_and_saves_the_value_head(tmp_path, tiny_llama, prompts_file):
    trainer = make_trainer(tmp_path, tiny_llama, prompts_file, run="run")
    head = {k: v.clone() for k, v in trainer.policy.module.v_head.state_dict().items()}
    stats = trainer.train()[-1]
    assert "ppo/loss/value" in stats and "ppo/loss/kl" not in stats
    moved = [
        k
        for k, v in trainer.policy.module.v_head.state_dict().items()
        if not torch.equal(v, head[k])
    ]
    assert moved
    assert (tmp_path / "run" / "final" / "value_head.safetensors").is_file()


def test_classic_step_refuses_responses_out_of_their_groups(tmp_path, tiny_llama, prompts_file):
    trainer = make_trainer(
        tmp_path, tiny_llama, prompts_file, **{"ppo.samples_per_prompt": K, "ppo.advantage": "rloo"}
    )
    batch = trainer.batch_for_step(0)
    responses = [torch.tensor([5, 6, 1])] * len(batch)
    shuffled = batch.input_ids[1:] + batch.input_ids[:1]  # the groups no longer line up
    with pytest.raises(RewardtuneError, match="samples_per_prompt = 4 consecutive"):
        trainer.step(shuffled, responses, [0.0] * len(batch))
    with pytest.raises(RewardtuneError, match="not groups"):
        trainer.step(batch.input_ids[:6], responses[:6], [0.0] * 6)
