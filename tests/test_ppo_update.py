"""The update trains the policy that sampled: no dropout (ratio 1 until the weights move),
the KL controller on summed k1, and classic TRL's early stopping and ratio guard."""

from __future__ import annotations

import pytest
import torch
import yaml

from conftest import tiny_overrides
from rewardtune import PPOTrainer, load_config
from rewardtune.core import ppo
from rewardtune.sampling.rollout import Generation, eval_mode


def make_trainer(tmp_path, tiny_llama, prompts_file, **extra) -> PPOTrainer:
    recipe = tmp_path / "update.yaml"
    recipe.write_text(yaml.safe_dump({"reward": [{"type": "vader"}]}))
    values = {
        "ppo.batch_size": 4,
        "ppo.mini_batch_size": 2,
        "ppo.learning_rate": 1e-2,
        "ppo.steps": 10,
        "model.lora.target_modules": "[q_proj,v_proj,lm_head]",
    } | extra
    return PPOTrainer(load_config(str(recipe), tiny_overrides(tiny_llama, prompts_file, **values)))


def run_steps(trainer: PPOTrainer, steps: int) -> list[dict]:
    """The classic loop, scored by response length (any non-constant score will do)."""
    history = []
    for _, batch in zip(range(steps), trainer.dataloader, strict=False):
        responses = trainer.generate(batch["input_ids"])
        scores = [len(r) / 6 for r in responses]
        history.append(trainer.step(batch["input_ids"], responses, scores))
    return history


def test_with_lora_dropout_the_single_minibatch_update_sees_ratio_one_on_every_step(
    tmp_path, tiny_llama, prompts_file
):
    trainer = make_trainer(
        tmp_path,
        tiny_llama,
        prompts_file,
        **{"model.lora.dropout": 0.3, "ppo.ppo_epochs": 1, "ppo.mini_batch_size": 4},
    )
    history = run_steps(trainer, 4)
    lora_b = [p for n, p in trainer.policy.module.lm.named_parameters() if "lora_B" in n]
    assert max(float(p.detach().abs().max()) for p in lora_b) > 1e-3, "the adapter never moved"
    for step, stats in enumerate(history):
        assert stats["ppo/policy/approxkl"] < 1e-6, (step, stats["ppo/policy/approxkl"])
        assert stats["ppo/policy/clipfrac"] == 0.0, (step, stats["ppo/policy/clipfrac"])


@pytest.mark.parametrize("kept", [True, False], ids=["logprobs-from-sampling", "fresh-forward"])
def test_below_temperature_one_the_update_scores_the_tempered_distribution_it_sampled(
    tmp_path, tiny_llama, prompts_file, kept
):
    """Sampled at T = 0.5, the old logprobs (kept from sampling, or a fresh scoring pass), the
    reference's and the update's are all of softmax(logits / 0.5): the ratio is 1 before the
    weights move, and the KL is that of the tempered distributions."""
    trainer = make_trainer(
        tmp_path,
        tiny_llama,
        prompts_file,
        **{"generation.temperature": 0.5, "ppo.ppo_epochs": 1, "ppo.mini_batch_size": 4},
    )
    for step, batch in zip(range(3), trainer.dataloader, strict=False):
        queries = batch["input_ids"]
        generation = trainer.sample(queries)
        if not kept:  # step() scores the responses in a fresh forward pass
            generation = Generation(generation.responses)
        if step == 1:  # the adapter has moved: the policy is not the reference
            assert_tempered(trainer, trainer._score(queries, generation), 0.5)
        responses = generation if kept else generation.responses
        scores = [len(r) / 6 for r in generation.responses]
        stats = trainer.step(queries, responses, scores)
        assert stats["ppo/policy/approxkl"] < 1e-6, stats["ppo/policy/approxkl"]


def assert_tempered(trainer: PPOTrainer, rollout, temperature: float) -> None:
    """The rollout's policy and reference logprobs are log softmax(logits / temperature)."""
    module = trainer.policy.module
    inputs = {k: getattr(rollout, k) for k in ("query_ids", "query_mask", "response_ids")}
    inputs["response_mask"] = rollout.response_mask

    def tempered(lm=None):
        with torch.inference_mode(), eval_mode(module):
            logits, _ = module(**inputs, with_values=False, lm=lm)
        logprobs = torch.log_softmax(logits.float() / temperature, -1)
        return logprobs.gather(-1, rollout.response_ids[..., None]).squeeze(-1) * mask

    mask = rollout.response_mask
    torch.testing.assert_close(rollout.logprobs, tempered(), atol=1e-5, rtol=0)
    with trainer.policy.reference() as ref_lm:  # the adapter off
        torch.testing.assert_close(rollout.ref_logprobs, tempered(ref_lm), atol=1e-5, rtol=0)
    assert (rollout.logprobs - rollout.ref_logprobs).abs().max() > 1e-3


def test_kl_controller_and_objective_kl_use_summed_k1_whatever_the_penalty_estimator(
    tmp_path, tiny_llama, prompts_file
):
    trainer = make_trainer(
        tmp_path,
        tiny_llama,
        prompts_file,
        **{"ppo.kl_estimator": "abs", "ppo.horizon": 8, "ppo.target_kl": 0.5},
    )
    rollouts = []
    score = trainer._score
    trainer._score = lambda q, r: rollouts.append(score(q, r)) or rollouts[-1]
    differs = False
    for _ in range(3):
        coef = trainer.kl_coef
        stats = run_steps(trainer, 1)[0]
        rollout = rollouts[-1]
        log_ratio = (rollout.logprobs - rollout.ref_logprobs) * rollout.response_mask
        k1, absolute = float(log_ratio.sum(1).mean()), float(log_ratio.abs().sum(1).mean())
        assert stats["objective/kl"] == pytest.approx(k1, abs=1e-6)
        assert stats["objective/kl_penalty"] == pytest.approx(absolute, abs=1e-6)
        assert trainer.kl_coef == pytest.approx(ppo.adaptive_kl_update(coef, k1, 0.5, 4, 8))
        differs |= abs(absolute - k1) > 1e-3
    assert differs, "the two estimates never differed: the test cannot tell them apart"


def test_early_stopping_ends_the_epochs_after_the_first_epoch_over_the_kl_line(
    tmp_path, tiny_llama, prompts_file
):
    trainer = make_trainer(
        tmp_path,
        tiny_llama,
        prompts_file,
        **{
            "ppo.ppo_epochs": 3,
            "ppo.mini_batch_size": 1,
            "ppo.early_stopping": True,
            "ppo.target_kl_early": 1e-9,
        },
    )
    calls = []
    minibatch_step = trainer.updater.minibatch_step
    trainer.updater.minibatch_step = lambda *args: calls.append(1) or minibatch_step(*args)
    stats = run_steps(trainer, 2)
    # each step: epoch 1 runs its 4 minibatches; the weights moved after the first, so the
    # last one's approxkl is over 1.5e-9 and epochs 2 and 3 never run (checked per epoch, as
    # classic TRL: a per-minibatch check would have stopped after 2)
    assert [s["ppo/early_stopped"] for s in stats] == [1.0, 1.0]
    assert len(calls) == 2 * 4
    assert stats[0]["ppo/policy/approxkl"] > 0


def test_without_early_stopping_every_epoch_and_minibatch_runs(tmp_path, tiny_llama, prompts_file):
    trainer = make_trainer(tmp_path, tiny_llama, prompts_file, **{"ppo.ppo_epochs": 3})
    calls = []
    minibatch_step = trainer.updater.minibatch_step
    trainer.updater.minibatch_step = lambda *args: calls.append(1) or minibatch_step(*args)
    stats = run_steps(trainer, 1)[0]
    assert len(calls) == 3 * 2 and stats["ppo/early_stopped"] == 0.0
    assert stats["ppo/skipped_minibatches"] == 0


def test_ratio_threshold_skips_every_minibatch_above_it_and_counts_them(
    tmp_path, tiny_llama, prompts_file
):
    # mean ratio is 1 on the first minibatch: a threshold of 0.5 skips every one of them
    trainer = make_trainer(
        tmp_path, tiny_llama, prompts_file, **{"ppo.ppo_epochs": 2, "ppo.ratio_threshold": 0.5}
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    stats = run_steps(trainer, 1)[0]
    assert stats["ppo/skipped_minibatches"] == 2 * 2
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param, before[name]), f"{name} moved in a skipped minibatch"


def test_a_ratio_threshold_above_the_ratio_skips_nothing(tmp_path, tiny_llama, prompts_file):
    trainer = make_trainer(tmp_path, tiny_llama, prompts_file, **{"ppo.ratio_threshold": 10.0})
    stats = run_steps(trainer, 1)[0]
    assert stats["ppo/skipped_minibatches"] == 0


def test_compiled_update_trains_as_the_eager_one(tmp_path, tiny_llama, prompts_file):
    """ppo.compile runs the update's forward through torch.compile: same stats and the same
    adapter after a step (float32, within 1e-5), and the ratio is still 1 before the weights
    move (the sampling forward is eager)."""
    settings = {"ppo.ppo_epochs": 1, "ppo.mini_batch_size": 4}
    trainers = {
        compiled: make_trainer(
            tmp_path, tiny_llama, prompts_file, **settings, **{"ppo.compile": compiled}
        )
        for compiled in (False, True)
    }
    assert isinstance(trainers[True].updater.forward, torch._dynamo.eval_frame.OptimizedModule)
    assert trainers[False].updater.forward is trainers[False].updater.model
    histories = {}
    for compiled, trainer in trainers.items():
        torch.manual_seed(0)  # the same draws for both
        histories[compiled] = run_steps(trainer, 2)
    for key in ("ppo/loss/policy", "ppo/loss/value", "ppo/policy/approxkl", "ppo/grad_norm"):
        eager, compiled = histories[False][0][key], histories[True][0][key]
        assert compiled == pytest.approx(eager, abs=1e-5), key
    weights = [
        {n: p for n, p in t.policy.module.named_parameters() if p.requires_grad}
        for t in trainers.values()
    ]
    for name, eager in weights[0].items():
        torch.testing.assert_close(weights[1][name], eager, atol=1e-5, rtol=1e-4)
    assert histories[True][1]["ppo/policy/approxkl"] < 1e-6
