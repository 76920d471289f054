"""The CLI end to end on tiny models, as a user runs it."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from conftest import run_cli, set_args, tiny_overrides

RUN_FILES = [
    "config.yaml",
    "metrics.jsonl",
    "samples.jsonl",
    "checkpoints",
    "final",
    "eval.json",
    "eval.jsonl",
    "report.html",
    "report.md",
    "run_info.json",
]
STAT_NAMES = [
    "objective/kl",
    "objective/kl_coef",
    "objective/entropy",
    "env/reward_mean",
    "env/reward_std",
    "ppo/returns/mean",
    "ppo/policy/advantages_mean",
    "ppo/loss/policy",
    "ppo/loss/value",
    "ppo/policy/clipfrac",
    "ppo/policy/approxkl",
    "ppo/val/vpred",
    "time/rollout",
    "time/reward",
    "time/update",
    "throughput/samples_per_s",
    "throughput/tokens_per_s",
]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "reward": [
                    {"type": "vader", "input": "response"},
                    {"type": "profanity", "weight": 0.5},
                ],
                "eval": {"toxicity": {"type": "profanity"}},
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, recipe, tiny_llama, prompts_file):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    overrides = tiny_overrides(
        tiny_llama,
        prompts_file,
        steps=3,
        **{"ppo.learning_rate": 1e-2, "model.lora.target_modules": "[q_proj,v_proj,lm_head]"},
    )
    result = run_cli("train", str(recipe), "--run-dir", str(run_dir), *set_args(overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_train_writes_every_file_of_the_run_directory(trained_run):
    for name in RUN_FILES:
        assert (trained_run / name).exists(), name
    metrics = [
        json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()
    ]
    assert [m["step"] for m in metrics] == [0, 1, 2]
    for name in STAT_NAMES + ["env/reward/vader", "env/reward/profanity"]:
        assert name in metrics[-1], name
        assert math.isfinite(metrics[-1][name]), name
    samples = [
        json.loads(line) for line in (trained_run / "samples.jsonl").read_text().splitlines()
    ]
    assert len(samples) == 3 * 4 and {"prompt", "response", "reward"} <= set(samples[0])
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == ["step-2", "step-3"]


def test_final_reloads_with_transformers_and_peft_and_generates(trained_run, tiny_llama):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    model = PeftModel.from_pretrained(base, trained_run / "final")
    tokenizer = AutoTokenizer.from_pretrained(trained_run / "final")
    ids = tokenizer("the movie was", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b), "the adapter never trained"


def test_eval_json_has_every_metric_finite(trained_run):
    summary = json.loads((trained_run / "eval.json").read_text())
    names = {m["name"] for m in summary["metrics"]}
    assert {
        "reward/total",
        "reward/vader",
        "reward/profanity",
        "toxicity",
        "toxicity/flagged",
        "perplexity",
        "length",
    } <= names
    for m in summary["metrics"]:
        values = [m["before"]["mean"], m["after"]["mean"], m["diff"], *m["ci"]]
        assert all(math.isfinite(v) for v in values), m["name"]
    assert math.isfinite(summary["kl"]["mean"])
    assert set(summary["diversity"]["after"]) == {"distinct-1", "distinct-2", "distinct-3"}
    rows = (trained_run / "eval.jsonl").read_text().splitlines()
    assert len(rows) == summary["n_prompts"] == 2


def test_zero_step_run_evaluates_before_equal_to_after(tmp_path, recipe, tiny_llama, prompts_file):
    run_dir = tmp_path / "zero"
    overrides = tiny_overrides(tiny_llama, prompts_file, steps=0)
    result = run_cli("train", str(recipe), "--run-dir", str(run_dir), *set_args(overrides))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert all(r["before"] == r["after"] and r["scores_before"] == r["scores_after"] for r in rows)
    summary = json.loads((run_dir / "eval.json").read_text())
    for m in summary["metrics"]:
        assert m["diff"] == 0.0 and m["ci_includes_zero"], m["name"]


def test_evaluate_command_on_a_checkpoint(trained_run):
    result = run_cli("evaluate", str(trained_run), "--checkpoint", "step-2", "--prompts", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "before vs after" in result.stderr


def test_generate_streams_from_base_model_and_final(trained_run, tiny_llama):
    for target in (str(tiny_llama), str(trained_run), str(trained_run / "final")):
        result = run_cli(
            "generate", target, "--prompt", "the movie was", "--n", "2", "--max-new-tokens", "4"
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.count(">>> the movie was") == 2


def test_merge_reloads_without_peft_and_matches_adapter_logits(trained_run, tiny_llama, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "merged"
    result = run_cli("merge", str(trained_run), str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    adapter = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama), trained_run / "final"
    ).eval()
    ids = torch.tensor([[3, 20, 30, 40, 50, 60]])
    with torch.no_grad():
        diff = (merged(ids).logits - adapter(ids).logits).abs().max().item()
    assert diff < 1e-4
