"""Two processes on CPU (gloo) through `accelerate launch`: one run, identical weights, global stats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, tiny_overrides

HELPER = Path(__file__).parent / "helpers" / "ddp_train.py"
pytestmark = pytest.mark.slow


def launch(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--cpu",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        *args,
    ]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=os.environ | {"OMP_NUM_THREADS": "1"} | (env or {}),
    )


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddp") / "ddp.yaml"
    path.write_text(yaml.safe_dump({"reward": [{"type": "vader"}], "eval": {"enabled": False}}))
    return path


def test_two_processes_train_one_run_with_identical_weights_and_global_stats(
    tmp_path, recipe, tiny_llama, prompts_file
):
    run, out = tmp_path / "run", tmp_path / "facts"
    overrides = tiny_overrides(tiny_llama, prompts_file, steps=3, **{"ppo.learning_rate": 1e-2})
    result = launch(str(HELPER), str(recipe), str(run), str(out), *overrides)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads(Path(f"{out}.{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["checksum"] == ranks[1]["checksum"], "ranks diverged"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3
    for step, row in enumerate(metrics):
        both = (ranks[0]["local_reward_means"][step] + ranks[1]["local_reward_means"][step]) / 2
        assert row["env/reward_mean"] == pytest.approx(both, abs=1e-5)
    assert ranks[0]["local_reward_means"] != ranks[1]["local_reward_means"], (
        "ranks saw the same samples"
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2", "step-3"]
    assert not list(tmp_path.glob("run*/**/.tmp-*"))


def test_cli_two_processes_then_resume_with_two(tmp_path, recipe, tiny_llama, prompts_file):
    run = tmp_path / "run"
    overrides = [a for o in tiny_overrides(tiny_llama, prompts_file, steps=2) for a in ("--set", o)]
    first = launch("-m", "rewardtune", "train", str(recipe), "--run-dir", str(run), *overrides)
    assert first.returncode == 0, first.stderr[-4000:]
    resumed = launch("-m", "rewardtune", "train", "--resume", str(run), "--set", "ppo.steps=3")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]


def test_global_batch_not_divisible_by_processes_exits_2(
    tmp_path, recipe, tiny_llama, prompts_file
):
    overrides = [
        a
        for o in tiny_overrides(
            tiny_llama, prompts_file, steps=1, **{"ppo.batch_size": 3, "ppo.mini_batch_size": 1}
        )
        for a in ("--set", o)
    ]
    result = launch(
        "-m", "rewardtune", "train", str(recipe), "--run-dir", str(tmp_path / "r"), *overrides
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and "must divide by the 2 processes" in errors[0]
