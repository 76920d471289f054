"""DeepSpeed ZeRO-2 and ZeRO-3 on a GPU: the shipped accelerate configs run one training step
and one resume (one process is enough to exercise partitioning and the gathered save). Skipped
without CUDA or without the deepspeed package; run on a GPU machine with:

    pip install deepspeed && python -m pytest -q tests/test_deepspeed_gpu.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import ROOT, set_args, tiny_overrides

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="ZeRO needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="no deepspeed"),
]


def launch(config: str, *args: str, cwd) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ROOT / "configs" / "accelerate" / f"{config}.yaml"),
        "--num_processes",
        "1",
        "-m",
        "rewardtune",
        "train",
        *args,
    ]
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("config", ["deepspeed-zero2", "deepspeed-zero3"])
@pytest.mark.parametrize("lora", [True, False])
def test_zero_trains_a_step_saves_whole_weights_and_resumes(
    tmp_path, tiny_gpt2, prompts_file, config, lora
):
    recipe = tmp_path / "zero.yaml"
    recipe.write_text(yaml.safe_dump({"reward": [{"type": "vader"}], "eval": {"enabled": False}}))
    extra = {} if lora else {"model.lora": "null"}
    overrides = tiny_overrides(tiny_gpt2, prompts_file, steps=1, **extra)
    first = launch(config, str(recipe), *set_args(overrides), "--run-dir", "run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-4000:]
    run = tmp_path / "run"
    weights = "adapter_model.safetensors" if lora else "model.safetensors"
    saved = load_file(run / "final" / weights)
    assert saved and all(v.numel() > 0 for v in saved.values())  # gathered, not shards
    resumed = launch(config, "--resume", "run", "--set", "ppo.steps=2", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1]
    assert abs(rows[0]["objective/kl"]) < 1e-6  # the reference is the starting policy
