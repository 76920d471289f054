"""Never lose a run: exact resume after kill -9, crash during checkpoint save, Ctrl-C, NaN."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from conftest import ROOT, run_cli, set_args, tiny_overrides
from rewardtune.runs.rundir import RunDir

REWARDS = Path(__file__).parent / "helpers" / "rewards.py"
VOLATILE = ("time/", "throughput/")


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "resume.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "reward": [{"type": "python", "function": f"{REWARDS}:length_reward"}],
                "eval": {"enabled": False},
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def args(recipe, tiny_llama, prompts_file):
    overrides = tiny_overrides(
        tiny_llama,
        prompts_file,
        steps=6,
        **{"ppo.learning_rate": 1e-2, "ppo.ppo_epochs": 2, "model.lora.dropout": 0.1},
    )
    return ["train", str(recipe), *set_args(overrides)]


def stable_metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, args):
    run = tmp_path_factory.mktemp("straight") / "run"
    result = run_cli(*args, "--run-dir", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def assert_same_run(a: Path, b: Path) -> None:
    assert stable_metrics(a) == stable_metrics(b)
    wa = load_file(a / "final" / "adapter_model.safetensors")
    wb = load_file(b / "final" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] == wb[key]).all(), f"{key} differs"
    va, vb = (
        load_file(a / "final" / "value_head.safetensors"),
        load_file(b / "final" / "value_head.safetensors"),
    )
    assert all((va[k] == vb[k]).all() for k in va)


def test_kill_9_in_step_4_then_resume_reproduces_the_straight_run(tmp_path, args, straight_run):
    run = tmp_path / "killed"
    env = {"RT_COUNTER": str(tmp_path / "calls"), "RT_KILL_AT": "4"}
    killed = run_cli(*args, "--run-dir", str(run), env=env)
    assert killed.returncode == -signal.SIGKILL
    assert [
        p.name for p in sorted((run / "checkpoints").iterdir()) if p.name.startswith("step")
    ] == ["step-2", "step-3"]
    assert len(stable_metrics(run)) == 3
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    assert_same_run(straight_run, run)


def test_crash_between_checkpoint_write_and_rename_keeps_previous_checkpoint(
    tmp_path, args, straight_run, monkeypatch
):
    """Run in-process; the third checkpoint's fsync (after writing, before rename) fails."""
    import rewardtune.runs.rundir as runs
    from rewardtune.cli import app

    calls = {"n": 0}
    real = runs.fsync_tree

    def failing_fsync(path):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk pulled out")
        real(path)

    monkeypatch.setattr(runs, "fsync_tree", failing_fsync)
    monkeypatch.chdir(ROOT)
    run = tmp_path / "crashed"
    with pytest.raises(OSError, match="disk pulled out"):
        app([*args[:2], "--run-dir", str(run), *args[2:]], standalone_mode=False)
    done = runs.RunDir(run).checkpoints()
    assert [p.name for p in done] == ["step-1", "step-2"]
    assert not list((run / "checkpoints").glob(".tmp-step-3-*")), (
        "the half-written checkpoint is removed"
    )
    monkeypatch.setattr(runs, "fsync_tree", real)
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(straight_run, run)


def test_sigint_finishes_the_step_checkpoints_and_exits_130(tmp_path, args, straight_run):
    run = tmp_path / "interrupted"
    env = os.environ | {
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
        "RT_COUNTER": str(tmp_path / "calls"),
        "RT_SLOW_AT": "2",
        "RT_SLOW_S": "4",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "rewardtune", *args, "--run-dir", str(run)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "calls").exists():
        time.sleep(0.1)
    while time.time() < deadline and (tmp_path / "calls").read_text() != "2":
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # during step 2's slow reward
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "rewardtune train --resume" in stderr
    assert [p.name for p in runs_checkpoints(run)][-1] == "step-2"
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(straight_run, run)


def runs_checkpoints(run: Path):
    from rewardtune.runs.rundir import RunDir

    return RunDir(run).checkpoints()


@pytest.mark.parametrize("skip", [False, True])
def test_nan_reward_stops_the_run_or_is_skipped_and_counted(
    tmp_path, recipe, tiny_llama, prompts_file, skip
):
    path = tmp_path / "nan.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "reward": [{"type": "python", "function": f"{REWARDS}:nan_reward"}],
                "eval": {"enabled": False},
            }
        )
    )
    run = tmp_path / "run"
    overrides = tiny_overrides(
        tiny_llama, prompts_file, steps=4, **{"ppo.skip_nonfinite_rewards": str(skip).lower()}
    )
    result = run_cli(
        "train",
        str(path),
        "--run-dir",
        str(run),
        *set_args(overrides),
        env={"RT_COUNTER": str(tmp_path / "calls"), "RT_NAN_AT": "3"},
    )
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    if skip:
        assert result.returncode == 0, result.stderr[-3000:]
        assert [m["env/skipped_nonfinite"] for m in metrics] == [0, 0, 1, 1]
    else:
        assert result.returncode == 2
        last = result.stderr.strip().splitlines()[-1]
        assert "step 2" in last and "non-finite" in last and "skip_nonfinite_rewards" in last
        assert "Traceback" not in result.stderr
        assert len(metrics) == 2
        assert [p.name for p in runs_checkpoints(run)] == ["step-1", "step-2"]
        load_file(run / "checkpoints" / "step-2" / "weights.safetensors")


def test_nan_in_loss_stops_with_the_quantity_and_step(tmp_path, recipe, tiny_llama, prompts_file):
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_llama, prompts_file, steps=2, **{"ppo.reward_scale": 1e39})
    result = run_cli("train", str(recipe), "--run-dir", str(run), *set_args(overrides))
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "step 0" in last and "NaN" in last and "Traceback" not in result.stderr


def test_time_based_checkpoint_lets_a_kill_before_save_every_resume(tmp_path, args, straight_run):
    """save_every=100 never saves by steps; save_every_minutes (here ~0 s) saves each step."""
    run = tmp_path / "by-time"
    env = {"RT_COUNTER": str(tmp_path / "calls"), "RT_KILL_AT": "4"}
    by_time = set_args(["run.save_every=100", "run.save_every_minutes=0.00001"])
    killed = run_cli(*args, *by_time, "--run-dir", str(run), env=env)
    assert killed.returncode == -signal.SIGKILL
    assert [p.name for p in RunDir(run).checkpoints()] == ["step-2", "step-3"]
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr and "from step-3" in resumed.stderr
    assert_same_run(straight_run, run)


def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, args, straight_run):
    run = tmp_path / "damaged"
    env = {"RT_COUNTER": str(tmp_path / "calls"), "RT_KILL_AT": "4"}
    assert run_cli(*args, "--run-dir", str(run), env=env).returncode == -signal.SIGKILL
    weights = run / "checkpoints" / "step-3" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:64])  # a disk that filled up mid-write
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warnings = [line for line in resumed.stderr.splitlines() if "has a damaged" in line]
    assert len(warnings) == 1 and "step-3" in warnings[0] and "step-2" in warnings[0]
    assert "from step-2" in resumed.stderr
    assert_same_run(straight_run, run)
