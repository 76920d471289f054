"""The reference is the policy training started from: continuing an adapter keeps base + that
adapter (loaded a second time, frozen) as the reference, for the KL penalty and for
evaluation's "before"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import run_cli, set_args, tiny_overrides
from rewardtune import PPOTrainer, load_config


@pytest.fixture(scope="module")
def far_adapter(tiny_llama, tmp_path_factory) -> Path:
    """A LoRA adapter whose lora_B is far from zero: base + adapter is another policy than the
    base (a freshly initialised adapter, B = 0, could not tell the two references apart)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 1.0)
    folder = tmp_path_factory.mktemp("adapter") / "start"
    model.save_pretrained(folder)
    return folder


def adapter_config(tmp_path, tiny_llama, prompts_file, adapter: Path, **extra):
    recipe = tmp_path / "continue.yaml"
    recipe.write_text(yaml.safe_dump({"reward": [{"type": "vader"}]}))
    values = {"model.adapter": str(adapter), "ppo.learning_rate": 1e-2, "ppo.steps": 3} | extra
    return recipe, tiny_overrides(tiny_llama, prompts_file, **values)


def lora_params(lm, adapter_name: str) -> dict[str, torch.Tensor]:
    return {n: p for n, p in lm.named_parameters() if f".{adapter_name}." in n and "lora_" in n}


def test_continuing_an_adapter_step_0_kl_to_the_reference_is_zero(
    tmp_path, tiny_llama, prompts_file, far_adapter
):
    recipe, overrides = adapter_config(tmp_path, tiny_llama, prompts_file, far_adapter)
    trainer = PPOTrainer(load_config(str(recipe), overrides))
    batch = next(iter(trainer.dataloader))
    responses = trainer.generate(batch["input_ids"])
    stats = trainer.step(batch["input_ids"], responses, [1.0, 0.0, 0.5, 0.2])
    assert abs(stats["objective/kl"]) < 1e-4, stats["objective/kl"]
    assert abs(stats["objective/kl_penalty"]) < 1e-4
    # the check can tell: against the base model (adapter disabled) the same samples are far off
    from rewardtune.models.hub import adapter_disabled
    from rewardtune.sampling.rollout import score

    with torch.no_grad():
        queries = batch["input_ids"]
        rollout = score(
            trainer.policy.module,
            lambda: adapter_disabled(trainer.policy.module.lm),
            queries,
            responses,
            trainer.pad_id,
            4,
        )
    base_kl = ((rollout.logprobs - rollout.ref_logprobs) * rollout.response_mask).sum(1).mean()
    assert abs(float(base_kl)) > 0.1, float(base_kl)


def test_the_reference_adapter_stays_frozen_and_only_the_trained_one_moves_and_is_saved(
    tmp_path, tiny_llama, prompts_file, far_adapter
):
    recipe, overrides = adapter_config(tmp_path, tiny_llama, prompts_file, far_adapter)
    trainer = PPOTrainer(load_config(str(recipe), overrides))
    lm = trainer.policy.module.lm
    start = {n: p.detach().clone() for n, p in lora_params(lm, "reference").items()}
    assert start and all(not p.requires_grad for p in lora_params(lm, "reference").values())
    history = trainer.train()
    assert len(history) == 3
    trained = lora_params(lm, "default")
    assert all(p.requires_grad for p in trained.values()), "the trained adapter froze"
    for name, param in lora_params(lm, "reference").items():
        assert torch.equal(param, start[name]), f"reference {name} moved"
    moved = [
        n
        for n, p in trained.items()
        if not torch.equal(p, start[n.replace("default", "reference")])
    ]
    assert moved, "the trained adapter never moved"
    saved = load_file(str(far_adapter / "adapter_model.safetensors"))
    checkpoint = trainer.save_checkpoint()  # no run dir: nothing written, but the state is built
    assert checkpoint is None
    from rewardtune.models import trainable_state_dict

    assert sorted(trainable_state_dict(trainer.policy)) == sorted(saved)


def test_evaluation_before_is_base_plus_the_starting_adapter_and_says_so(
    tmp_path, tiny_llama, prompts_file, far_adapter
):
    recipe, overrides = adapter_config(
        tmp_path, tiny_llama, prompts_file, far_adapter, **{"ppo.steps": 1}
    )
    run = tmp_path / "run"
    result = run_cli("train", str(recipe), "--run-dir", str(run), *set_args(overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run / "eval.json").read_text())
    assert summary["reference"] == f"base + adapter {far_adapter}"
    assert (
        f"Before = the reference policy: base + adapter {far_adapter}"
        in (run / "report.md").read_text()
    )
    final = load_file(str(run / "final" / "adapter_model.safetensors"))
    assert sorted(final) == sorted(load_file(str(far_adapter / "adapter_model.safetensors")))
    assert not (run / "final" / "reference").exists(), "the reference adapter was saved"
    # "before" samples from base + adapter: the KL of "after" to it is small, not the
    # adapter's whole distance from the base
    assert abs(summary["kl"]["mean"]) < 1.0, summary["kl"]


def test_the_cuda_graph_key_sees_the_switch_to_the_reference_adapter(tiny_llama, far_adapter):
    """A captured decode step replays the adapter it saw: switching the active adapter (the
    weights stay where they are) must change the key."""
    from rewardtune.config import ModelConfig
    from rewardtune.models import load_policy
    from rewardtune.sampling import fast as decoding

    policy = load_policy(ModelConfig(name=str(tiny_llama), adapter=str(far_adapter)))
    lm, head = policy.module.lm, policy.module.v_head
    trained = decoding._weights_key(lm, head)
    with policy.reference():
        reference = decoding._weights_key(lm, head)
    assert reference != trained
    assert decoding._weights_key(lm, head) == trained
