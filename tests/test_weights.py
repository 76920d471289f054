"""Loading saved weights checks their keys: a fully fine-tuned run evaluates from disk with
its trained weights, and weights that do not fit the model stop with the first bad key. Loading
runs no code from the hub: no hub kernels for the policy or a classifier."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from conftest import run_cli, set_args, tiny_overrides
from rewardtune.config import ModelConfig
from rewardtune.models import load_policy
from rewardtune.models.weights import first_mismatch
from rewardtune.rewards.classifier import load_classifier


def test_models_load_without_hub_kernels(tiny_llama, hate_classifier, monkeypatch):
    """transformers kernelizes a model it loads with kernels from the hub (remote code, fetched
    at the first train()/eval() on a GPU) unless asked not to, wherever `kernels` is installed."""
    from transformers import PreTrainedModel

    asked = []
    monkeypatch.delenv("USE_HUB_KERNELS", raising=False)
    monkeypatch.setattr(
        PreTrainedModel, "set_use_kernels", lambda self, use, *args, **kw: asked.append(use)
    )
    load_policy(ModelConfig(name=str(tiny_llama)))
    load_classifier(str(hate_classifier), "cpu")
    assert asked == [False, False]


def test_first_mismatch_names_an_unknown_key_then_a_shape_then_a_missing_key():
    own = {"a": torch.zeros(2), "b": torch.zeros(3)}
    assert first_mismatch(own, {"a": torch.ones(2), "b": torch.ones(3)}) is None
    assert first_mismatch(own, {"a": torch.ones(2), "c": torch.ones(3)}) == "unknown key c"
    assert first_mismatch(own, {"a": torch.ones(4), "b": torch.ones(3)}) == (
        "a has shape (4,), the model (2,)"
    )
    assert first_mismatch(own, {"a": torch.ones(2)}) == "missing key b"


def test_first_mismatch_accepts_a_tied_weight_saved_once():
    shared = torch.zeros(2, 2)
    own = {"embed.weight": shared, "head.weight": shared, "bias": torch.zeros(2)}
    assert first_mismatch(own, {"embed.weight": torch.ones(2, 2), "bias": torch.ones(2)}) is None
    assert first_mismatch(own, {"embed.weight": torch.ones(2, 2)}) == "missing key bias"


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_gpt2, prompts_file):
    """One step of full fine-tuning (GPT-2, dropout 0.1 in its config), evaluation off."""
    work = tmp_path_factory.mktemp("full")
    recipe = work / "full.yaml"
    spec = {"reward": [{"type": "vader"}], "model": {"lora": None}, "eval": {"enabled": False}}
    recipe.write_text(yaml.safe_dump(spec))
    overrides = tiny_overrides(tiny_gpt2, prompts_file, steps=1, **{"ppo.learning_rate": 1e-2})
    run = work / "run"
    result = run_cli("train", str(recipe), "--run-dir", str(run), *set_args(overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_a_full_fine_tuned_run_evaluates_from_disk_with_its_trained_weights(full_run, tiny_gpt2):
    trained = load_file(str(full_run / "final" / "model.safetensors"))
    base = load_file(str(tiny_gpt2 / "model.safetensors"))
    assert any(not torch.equal(trained[k], base[k]) for k in base if k in trained)
    result = run_cli("evaluate", str(full_run))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((full_run / "eval.json").read_text())
    assert summary["reference"] == "frozen copy of the initial weights"
    rows = [json.loads(line) for line in (full_run / "eval.jsonl").read_text().splitlines()]
    # after != before: the trained weights were loaded, not the base weights evaluated twice
    assert any(abs(r["kl"]) > 1e-4 for r in rows), [r["kl"] for r in rows]


def test_full_weights_that_do_not_fit_exit_2_naming_the_first_bad_key(full_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(full_run, run)
    path = run / "final" / "model.safetensors"
    state = load_file(str(path))
    key = sorted(k for k in state if k.endswith("attn.c_attn.weight"))[0]
    state[key.replace("c_attn", "c_attention")] = state.pop(key)
    save_file(state, str(path))
    result = run_cli("evaluate", str(run))
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "does not fit" in last and "c_attention" in last and "Traceback" not in result.stderr


@pytest.mark.parametrize("change", ["drop", "reshape"])
def test_adapter_weights_that_do_not_fit_name_the_first_bad_key(tiny_llama, tmp_path, change):
    from rewardtune.config import ModelConfig
    from rewardtune.models import load_policy, trainable_state_dict
    from rewardtune.runs.checkpoints import WEIGHTS, load_trained_weights
    from rewardtune.types import RewardtuneError

    policy = load_policy(ModelConfig(name=str(tiny_llama)))
    state = {k: v.detach().clone() for k, v in trainable_state_dict(policy).items()}
    key = sorted(k for k in state if "lora_A" in k)[0]
    if change == "drop":
        del state[key]
    else:
        state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])
    save_file(state, str(tmp_path / WEIGHTS))
    with pytest.raises(RewardtuneError, match="does not fit") as err:
        load_trained_weights(policy, tmp_path)
    assert key.replace("lora_A.weight", "lora_A") in str(err.value), str(err.value)
