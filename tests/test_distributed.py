"""Several processes on CPU (gloo): the same weights on every rank, stats over every rank's
samples, one run directory, resume with the same number of processes, evaluation split across
processes, and the global batch that does not divide."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import ROOT, run_cli, set_args, tiny_overrides
from rewardtune.distributed import (
    check_divisible,
    contiguous_share,
    launch_arguments,
    strided_share,
    strip_option,
)
from rewardtune.types import RewardtuneError

HELPERS = Path(__file__).parent / "helpers"
STEPS = 3


def accelerate_launch(*args: str, cwd: Path, env: dict | None = None, timeout: float = 240):
    """`accelerate launch --num_processes 2` as a user types it on a CPU machine: accelerate's
    --cpu flag picks its one-process launcher, so two processes come from --multi_gpu
    (torchrun), and the children fall back to gloo because there is no CUDA."""
    command = [sys.executable, "-m", "accelerate.commands.launch", *launch_arguments(2), *args]
    full_env = os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env | (env or {}),
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "ddp.yaml"
    spec = {"reward": [{"type": "python", "function": f"{HELPERS / 'rewards.py'}:recorded_reward"}]}
    path.write_text(yaml.safe_dump(spec | {"eval": {"enabled": False}}))
    return path


@pytest.fixture(scope="module")
def overrides(tiny_llama, prompts_file) -> list[str]:
    return tiny_overrides(
        tiny_llama,
        prompts_file,
        steps=STEPS,
        **{
            "ppo.learning_rate": 1e-2,
            "ppo.ppo_epochs": 2,
            "data.eval_fraction": 0.3,
            "eval.prompts": 3,
            "eval.batch_size": 1,
            "eval.forms": "[plain,chat]",
        },
    )


def train_two_processes(work: Path, recipe: Path, overrides: list[str], timeout: float = 240):
    """`rewardtune train RECIPE --run-dir run` on 2 processes, each dumping its parameters and
    scores into ``work`` (tests/helpers/dump_params.py)."""
    return accelerate_launch(
        str(HELPERS / "dump_params.py"),
        str(work),
        "train",
        str(recipe),
        *set_args(overrides),
        "--run-dir",
        "run",
        cwd=work,
        env={"RT_SCORES_DIR": str(work)},
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, recipe, overrides) -> Path:
    """3 steps on 2 processes through `accelerate launch`; the folder holds only what it wrote."""
    work = tmp_path_factory.mktemp("ddp")
    result = train_two_processes(work, recipe, overrides)
    assert result.returncode == 0, result.stderr[-4000:]
    return work


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def same_weights_on_both_ranks(work: Path) -> dict:
    """Rank 0's parameters (tests/helpers/dump_params.py), after checking rank 1's equal them."""
    rank0 = load_file(work / "params-rank0.safetensors")
    rank1 = load_file(work / "params-rank1.safetensors")
    for key in rank0:
        assert (rank0[key] == rank1[key]).all(), f"{key} differs between ranks"
    return rank0


def test_two_processes_end_with_identical_weights_on_both_ranks(two_process_run):
    rank0 = load_file(two_process_run / "params-rank0.safetensors")
    rank1 = load_file(two_process_run / "params-rank1.safetensors")
    assert rank0.keys() == rank1.keys() and any("lora_B" in k for k in rank0)
    for key in rank0:
        assert (rank0[key] == rank1[key]).all(), f"{key} differs between ranks"
    lora_b = [v for k, v in rank0.items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in lora_b), "the adapter never trained"
    final = load_file(two_process_run / "run" / "final" / "adapter_model.safetensors")
    assert sum(v.abs().sum() for v in final.values()) > 0


def test_logged_reward_mean_is_the_mean_over_both_ranks_samples(two_process_run):
    per_rank = [
        [
            json.loads(line)
            for line in (two_process_run / f"scores-rank{r}.jsonl").read_text().splitlines()
        ]
        for r in (0, 1)
    ]
    assert [len(calls) for calls in per_rank] == [STEPS, STEPS]  # one reward call per step
    rows = metrics(two_process_run / "run")
    assert [r["step"] for r in rows] == list(range(STEPS))
    rank0_only = []
    for step, row in enumerate(rows):
        both = per_rank[0][step] + per_rank[1][step]
        assert len(both) == 4  # the global batch, 2 samples per rank
        assert row["env/reward_mean"] == pytest.approx(sum(both) / len(both), abs=1e-6)
        rank0_only.append(sum(per_rank[0][step]) / 2)
    # the check can tell: rank 0's own mean differs from the logged one on some step
    assert any(abs(a - r["env/reward_mean"]) > 1e-3 for a, r in zip(rank0_only, rows, strict=True))


def test_only_rank_0_writes_one_run_directory(two_process_run):
    written = sorted(p.name for p in two_process_run.iterdir())
    assert written == [
        "params-rank0.safetensors",
        "params-rank1.safetensors",
        "run",
        "scores-rank0.jsonl",
        "scores-rank1.jsonl",
    ]
    run = two_process_run / "run"
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert checkpoints == ["step-2", "step-3"]  # keep_checkpoints = 2, no stray temp folders
    assert len(metrics(run)) == STEPS  # rank 1 appended nothing
    state = json.loads((run / "checkpoints" / "step-3" / "trainer_state.json").read_text())
    assert state["world_size"] == 2


def test_resume_with_two_processes_continues_and_evaluates_split_across_them(
    two_process_run, tmp_path
):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(two_process_run / "run"), str(run)], check=True)
    resumed = run_cli(
        "train",
        "--resume",
        str(run),
        "--processes",
        "2",
        *set_args(["ppo.steps=5", "eval.enabled=true"]),
        env={"OMP_NUM_THREADS": "1"},
    )
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming" in resumed.stderr and "from step-3" in resumed.stderr
    rows = metrics(run)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[:STEPS] == metrics(two_process_run / "run")  # the first steps are kept as they were
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-4", "step-5"]
    # the evaluation ran on both processes (3 prompts, batches of 1: ranks 0,1,0) and gathered
    # every row in prompt order; one process evaluating the same final/ draws the same samples,
    # and so do the sections (the held-out prompts in the chat form: eval.forms)
    split = _eval_texts(run)
    assert len(split["eval.jsonl"]) == 3 and len(split["eval_sections.jsonl"]) == 3
    assert {r[0] for r in split["eval_sections.jsonl"]} == {("held-out", "chat")}
    alone = run_cli("evaluate", str(run))
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert _eval_texts(run) == split


def _eval_texts(run: Path) -> dict[str, list[tuple]]:
    """(set, prompt, before, after) of every row of eval.jsonl and eval_sections.jsonl."""
    return {
        name: [
            ((r.get("prompts"), r.get("form")), r["prompt"], r["before"], r["after"])
            for r in map(json.loads, (run / name).read_text().splitlines())
        ]
        for name in ("eval.jsonl", "eval_sections.jsonl")
    }


def test_nan_scores_on_one_rank_are_masked_and_both_ranks_keep_training(
    tmp_path, tiny_llama, prompts_file
):
    recipe = tmp_path / "nan.yaml"
    reward = {"type": "python", "function": f"{HELPERS / 'rewards.py'}:nan_on_rank1_reward"}
    recipe.write_text(yaml.safe_dump({"reward": [reward], "eval": {"enabled": False}}))
    overrides = tiny_overrides(
        tiny_llama, prompts_file, steps=2, **{"ppo.skip_nonfinite_rewards": "true"}
    )
    result = train_two_processes(tmp_path, recipe, overrides, timeout=180)
    assert result.returncode == 0, result.stderr[-4000:]
    rows = metrics(tmp_path / "run")
    per_rank = [
        [json.loads(line) for line in (tmp_path / f"scores-rank{r}.jsonl").read_text().splitlines()]
        for r in (0, 1)
    ]
    for step, row in enumerate(rows):
        assert row["env/skipped_nonfinite"] == 1  # counted over both ranks
        finite = per_rank[0][step] + per_rank[1][step][1:]
        assert row["env/reward_mean"] == pytest.approx(sum(finite) / 3, abs=1e-6)
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
    same_weights_on_both_ranks(tmp_path)


def test_minibatch_guards_decide_for_both_ranks_together(
    tmp_path, recipe, tiny_llama, prompts_file
):
    """ratio_threshold below 1 skips every minibatch (a forward with no backward under DDP) and
    early stopping ends the epochs: both decided on the mean over ranks, so neither hangs."""
    overrides = tiny_overrides(
        tiny_llama,
        prompts_file,
        steps=2,
        **{"ppo.ppo_epochs": 3, "ppo.ratio_threshold": 0.5, "ppo.early_stopping": "true"},
    )
    result = accelerate_launch(
        "-m",
        "rewardtune",
        "train",
        str(recipe),
        *set_args(overrides),
        "--run-dir",
        "run",
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    rows = metrics(tmp_path / "run")
    # 4 samples, minibatches of 2 over 2 ranks: 2 per epoch; approxkl stays 0 (nothing moves),
    # so all 3 epochs run and all 6 minibatches are skipped on both ranks
    assert [r["ppo/skipped_minibatches"] for r in rows] == [6, 6]
    assert [r["ppo/early_stopped"] for r in rows] == [0.0, 0.0]


def test_resume_with_another_number_of_processes_exits_2_with_one_line(two_process_run, tmp_path):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(two_process_run / "run"), str(run)], check=True)
    before = (run / "metrics.jsonl").read_text()
    result = run_cli("train", "--resume", str(run), *set_args(["ppo.steps=5"]))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "written by 2 process(es)" in errors[0], result.stderr
    assert (run / "metrics.jsonl").read_text() == before


def test_a_signal_to_one_process_stops_both_at_the_same_step_with_a_checkpoint(
    tmp_path, recipe, overrides
):
    env = os.environ | {
        "RT_SCORES_DIR": str(tmp_path),
        "RT_WRITE_PID": "1",
        "RT_SLOW_S": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "300",
    }
    args = set_args([*overrides, "ppo.steps=30"])
    command = [sys.executable, "-m", "rewardtune", "train", str(recipe), *args]
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [*command, "--run-dir", str(run), "--processes", "2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid_file = tmp_path / "pid-rank1"
    deadline = time.monotonic() + 120
    while not pid_file.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert pid_file.exists(), proc.communicate(timeout=60)[1][-3000:]
    os.kill(int(pid_file.read_text()), signal.SIGTERM)  # rank 1 only
    _, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stderr[-3000:]
    assert f"rewardtune train --resume {run} --processes 2" in stderr
    steps = len(metrics(run))
    assert 1 <= steps < 30
    newest = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").iterdir())[-1]
    assert newest == steps  # both ranks stopped after the same step and it was saved
    calls = [len((tmp_path / f"scores-rank{r}.jsonl").read_text().splitlines()) for r in (0, 1)]
    assert calls == [steps, steps]


def test_global_batch_not_divisible_by_the_processes_exits_2_with_one_line(
    tmp_path, recipe, overrides
):
    bad = set_args([*overrides, "ppo.batch_size=3", "ppo.mini_batch_size=3"])
    result = run_cli(
        "train", str(recipe), *bad, "--run-dir", str(tmp_path / "run"), "--processes", "2"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: ppo.batch_size (3) and ppo.mini_batch_size (3) are global and must divide by the "
        "2 processes; set them to multiples of 2"
    ]
    assert not (tmp_path / "run").exists()


def test_under_accelerate_launch_the_same_mistake_is_reported_once(tmp_path, recipe, overrides):
    bad = set_args([*overrides, "ppo.batch_size=3", "ppo.mini_batch_size=3"])
    result = accelerate_launch("-m", "rewardtune", "train", str(recipe), *bad, cwd=tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "must divide by the 2 processes" in errors[0], result.stderr


@pytest.mark.parametrize(
    "name, engine",
    [
        ("ddp", "MULTI_GPU"),
        ("fsdp", "FSDP"),
        ("deepspeed-zero2", "DEEPSPEED"),
        ("deepspeed-zero3", "DEEPSPEED"),
    ],
)
def test_shipped_accelerate_configs_load_with_accelerates_own_loader(name, engine):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.name == engine
    assert config.num_machines == 1 and config.main_process_port == 0
    if engine == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
        assert config.deepspeed_config["gradient_accumulation_steps"] == 1


# --- the pure helpers -------------------------------------------------------------------


def test_contiguous_shares_partition_the_batch_in_rank_order():
    items = list(range(8))
    shares = [contiguous_share(items, r, 4) for r in range(4)]
    assert shares == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_strided_shares_split_an_uneven_count_within_one():
    assert [strided_share(5, r, 2) for r in range(2)] == [[0, 2, 4], [1, 3]]
    assert strided_share(1, 1, 2) == []


def test_check_divisible_names_both_keys_and_the_process_count():
    check_divisible(8, 4, 2)
    with pytest.raises(
        RewardtuneError, match=r"batch_size \(6\).*mini_batch_size \(3\).*2 processes"
    ):
        check_divisible(6, 3, 2)


def test_check_divisible_wants_whole_groups_in_each_process_share():
    check_divisible(8, 4, 2, group=4)  # 4 responses each: one group of 4
    with pytest.raises(RewardtuneError, match=r"takes 4 of ppo.batch_size \(8\).*multiple of 6"):
        check_divisible(8, 4, 2, group=3)


def test_two_processes_train_grpo_groups_without_a_value_head(tmp_path, recipe, overrides):
    extra = ["ppo.advantage=grpo", "ppo.samples_per_prompt=2", "ppo.steps=2"]
    result = train_two_processes(tmp_path, recipe, [*overrides, *extra])
    assert result.returncode == 0, result.stderr[-4000:]
    same_weights_on_both_ranks(tmp_path)
    assert not (tmp_path / "run" / "final" / "value_head.safetensors").exists()
    assert "ppo/loss/value" not in metrics(tmp_path / "run")[-1]


def test_strip_option_removes_the_option_and_its_value_in_both_spellings():
    argv = ["train", "r.yaml", "--processes", "2", "--set", "a=1", "--processes=4"]
    assert strip_option(argv, "--processes") == ["train", "r.yaml", "--set", "a=1"]


def test_two_processes_with_dynamic_sampling_draw_alike_and_end_with_identical_weights(
    tmp_path, overrides
):
    recipe = tmp_path / "filter.yaml"
    reward = {"type": "python", "function": f"{HELPERS / 'rewards.py'}:parity_reward"}
    recipe.write_text(yaml.safe_dump({"reward": [reward], "eval": {"enabled": False}}))
    extra = [
        "ppo.advantage=grpo",
        "ppo.samples_per_prompt=2",
        "ppo.filter_groups=true",
        "ppo.max_resample_rounds=2",
        "ppo.steps=3",
    ]
    result = train_two_processes(tmp_path, recipe, [*overrides, *extra])
    assert result.returncode == 0, result.stderr[-4000:]
    same_weights_on_both_ranks(tmp_path)
    rows = metrics(tmp_path / "run")
    assert len(rows) == 3
    assert all(0 <= r["env/filtered_groups"] <= 1 and 0 <= r["env/batch_fill"] <= 1 for r in rows)


# --- preemption: SIGTERM to every process, then the same command again ----------------------


def _logged(run: Path) -> list[dict]:
    """metrics.jsonl without the stats that measure time."""
    return [
        {k: v for k, v in row.items() if not k.startswith(("time/", "throughput/"))}
        for row in metrics(run)
    ]


@pytest.mark.slow
def test_sigterm_to_every_process_checkpoints_and_the_requeued_command_ends_as_uninterrupted(
    tmp_path, recipe, overrides, two_process_run
):
    """A scheduler's preemption signals every process of the job (the launcher forwards its
    own SIGTERM too, a second one to each worker); they finish the step in flight, save it and
    exit. The same `--resume auto` command then finishes the run, equal to one never stopped."""
    run = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "rewardtune",
        "train",
        str(recipe),
        *set_args(overrides),
        "--run-dir",
        str(run),
        "--resume",
        "auto",
        "--processes",
        "2",
    ]
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "300"}
    scores = tmp_path / "scores"
    scores.mkdir()
    first = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env | {"RT_SCORES_DIR": str(scores), "RT_SLOW_S": "2"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a job's processes are
    )
    calls = scores / "scores-rank0.jsonl"
    deadline = time.monotonic() + 180
    while not calls.exists() and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.1)
    assert calls.exists(), first.communicate(timeout=60)[1][-3000:]
    os.killpg(first.pid, signal.SIGTERM)  # step 0's reward is sleeping on both ranks
    _, stderr = first.communicate(timeout=240)
    assert first.returncode == 143, stderr[-3000:]  # 128 + SIGTERM, from the launcher
    # "interrupted (SIGTERM): ...", or "interrupted: ..." where rank 0 heard of it from another
    assert re.search(r"interrupted( \(SIGTERM\))?: checkpoint saved at step 1", stderr)
    assert stderr.count("checkpoint saved at step 1") == 1
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-1"]
    assert len(metrics(run)) == 1 and not (run / "final").exists()

    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "from step-1" in again.stderr
    assert _logged(run) == _logged(two_process_run / "run")
    final = load_file(run / "final" / "adapter_model.safetensors")
    expected = load_file(two_process_run / "run" / "final" / "adapter_model.safetensors")
    assert final.keys() == expected.keys()
    for key in final:
        assert (final[key] == expected[key]).all(), key


def test_resume_auto_starts_a_new_run_over_a_run_without_checkpoints_and_resumes_one_with(
    tmp_path,
):
    from rewardtune.cli.training import _auto_resume

    run = tmp_path / "run"
    assert _auto_resume(None, None, run, False) == (None, False)  # nothing there: start
    run.mkdir()
    sections = {"model": {}, "reward": [], "ppo": {}, "run": {}}
    (run / "config.yaml").write_text(yaml.safe_dump(sections))
    assert _auto_resume(None, None, run, False) == (None, True)  # killed before a checkpoint
    (run / "checkpoints" / "step-2").mkdir(parents=True)
    (run / "checkpoints" / "step-2" / "trainer_state.json").write_text("{}")
    assert _auto_resume(None, None, run, False) == (run, False)


def test_resume_auto_without_a_fixed_run_directory_exits_2_with_one_line(tmp_path, recipe):
    result = run_cli("train", str(recipe), "--resume", "auto")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: --resume auto needs a fixed run directory, but run.dir (runs/{recipe}-{time}) "
        "names a new one each time; add --run-dir DIR"
    ]


# --- two machines, simulated on one: two launchers of one process each ----------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_machines(work: Path, recipe: Path, args: list[str]) -> list[tuple[int, str]]:
    """`accelerate launch --num_machines 2 --machine_rank R --main_process_ip 127.0.0.1` for
    R = 0 and 1 at once, one process each, as the two machines of a job would; both run
    tests/helpers/dump_params.py (each writes its parameters into ``work`` at the end)."""
    port = str(free_port())
    procs = []
    for machine in (0, 1):
        options = [
            "--multi_gpu",
            "--num_processes",
            "2",  # in all, over both machines
            "--num_machines",
            "2",
            "--machine_rank",
            str(machine),
            "--main_process_ip",
            "127.0.0.1",
            "--main_process_port",
            port,
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
        ]
        command = [sys.executable, "-m", "accelerate.commands.launch", *options]
        procs.append(
            subprocess.Popen(
                [*command, str(HELPERS / "dump_params.py"), str(work), "train", *args],
                cwd=work,
                env=os.environ | {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return [(p.wait(timeout=300), p.communicate()[1]) for p in procs]


@pytest.mark.slow
def test_two_machines_of_one_process_form_one_job_and_resume_it(
    tmp_path, recipe, overrides, two_process_run
):
    """Machine 0 and machine 1 (one process each, on one host here) train one run: one run
    directory, written by rank 0; the same weights on both; stopped after 2 steps and resumed
    to 3, the run equals the 2-process run of 3 steps on one machine."""
    first = launch_two_machines(
        tmp_path, recipe, [str(recipe), *set_args([*overrides, "ppo.steps=2"]), "--run-dir", "run"]
    )
    assert [code for code, _ in first] == [0, 0], first[0][1][-3000:] + first[1][1][-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "params-rank0.safetensors",
        "params-rank1.safetensors",
        "run",
    ]
    resumed = launch_two_machines(tmp_path, recipe, ["--resume", "run", "--set", "ppo.steps=3"])
    assert [code for code, _ in resumed] == [0, 0], resumed[0][1][-3000:] + resumed[1][1][-3000:]
    assert "from step-2" in resumed[0][1]
    rank0 = same_weights_on_both_ranks(tmp_path)
    assert _logged(tmp_path / "run") == _logged(two_process_run / "run")
    expected = load_file(two_process_run / "params-rank0.safetensors")
    assert all((rank0[k] == expected[k]).all() for k in expected)


def _accelerator(distributed_type: str, device: str = "cuda"):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    state = SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=3))
    return SimpleNamespace(
        distributed_type=DistributedType[distributed_type],
        device=torch.device(device),
        state=state,
    )


@pytest.mark.parametrize("engine", ["FSDP", "DEEPSPEED"])
def test_quantized_weights_under_a_sharding_engine_are_refused_in_one_line(engine):
    from rewardtune.distributed import check_engine

    with pytest.raises(RewardtuneError, match="4bit cannot be sharded by FSDP or ZeRO-3"):
        check_engine(_accelerator(engine), "4bit")
    check_engine(_accelerator(engine), "none")
    check_engine(_accelerator("MULTI_GPU"), "4bit")


# --- FSDP on CPU: PyTorch's FSDP2 (accelerate applies its plugin on accelerators only) ------


def fsdp_launch(work: Path, *args: str) -> subprocess.CompletedProcess:
    """`accelerate launch --use_fsdp --num_processes 2 -m rewardtune train ARGS` on CPU."""
    options = ["--use_fsdp", *launch_arguments(2)[1:]]  # --use_fsdp in place of --multi_gpu
    command = [sys.executable, "-m", "accelerate.commands.launch", *options, "-m", "rewardtune"]
    env = os.environ | {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [*command, "train", *args], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )


def _close(rows: list[dict], expected: list[dict]) -> None:
    assert [r.keys() for r in rows] == [r.keys() for r in expected]
    for row, want in zip(rows, expected, strict=True):
        for key, value in want.items():
            assert row[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (row["step"], key)


def _resume_from_previous_checkpoint(run: Path, work: Path) -> Path:
    """A copy of ``run`` as a kill after its next-to-last checkpoint leaves it, resumed under
    FSDP to the same end."""
    copy = work / "resumed"
    subprocess.run(["cp", "-r", str(run), str(copy)], check=True)
    newest = sorted((copy / "checkpoints").iterdir(), key=lambda p: int(p.name.split("-")[1]))
    subprocess.run(["rm", "-r", str(newest[-1]), str(copy / "final")], check=True)
    result = fsdp_launch(work, "--resume", str(copy))
    assert result.returncode == 0, result.stderr[-4000:]
    return copy


@pytest.mark.slow
def test_fsdp_lora_trains_as_ddp_saves_a_peft_adapter_and_resumes_exactly(
    tmp_path, recipe, overrides, tiny_llama, two_process_run
):
    """Two CPU processes under FSDP2, LoRA: the same samples, stats and adapter as the DDP run
    of the same recipe (tests above), step-0 KL 0 (the reference is the adapter disabled on the
    gathered weights), a final/ adapter peft loads alone, and a resume equal to the run."""
    result = fsdp_launch(tmp_path, str(recipe), *set_args(overrides), "--run-dir", "run")
    assert result.returncode == 0, result.stderr[-4000:]
    run, ddp = tmp_path / "run", two_process_run / "run"
    assert (run / "samples.jsonl").read_text() == (ddp / "samples.jsonl").read_text()
    _close(_logged(run), _logged(ddp))
    assert abs(metrics(run)[0]["objective/kl"]) < 1e-6
    final = load_file(run / "final" / "adapter_model.safetensors")
    expected = load_file(ddp / "final" / "adapter_model.safetensors")
    assert final.keys() == expected.keys()
    for key in final:
        torch.testing.assert_close(final[key], expected[key], rtol=1e-4, atol=1e-6)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    loaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_llama), run / "final"
    )
    lora_b = {k: v for k, v in loaded.state_dict().items() if "lora_B" in k}
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b.values())

    resumed = _resume_from_previous_checkpoint(run, tmp_path)
    assert _logged(resumed) == _logged(run)
    again = load_file(resumed / "final" / "adapter_model.safetensors")
    assert all(torch.equal(again[k], final[k]) for k in final)


@pytest.mark.slow
def test_fsdp_full_fine_tuning_trains_as_ddp_saves_whole_weights_and_resumes_exactly(
    tmp_path, recipe, tiny_gpt2, prompts_file
):
    """GPT-2 (tied embedding and head), every weight trained, sharded over two CPU processes:
    the same stats and whole final weights as DDP, loadable by transformers alone, step-0 KL 0
    against the frozen copy, and a resume equal to the run."""
    values = {"model.lora": "null", "ppo.learning_rate": 1e-3}
    args = set_args(tiny_overrides(tiny_gpt2, prompts_file, steps=2, **values))
    ddp = accelerate_launch(
        "-m", "rewardtune", "train", str(recipe), *args, "--run-dir", "ddp", cwd=tmp_path
    )
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    result = fsdp_launch(tmp_path, str(recipe), *args, "--run-dir", "run")
    assert result.returncode == 0, result.stderr[-4000:]
    run = tmp_path / "run"
    assert (run / "samples.jsonl").read_text() == (tmp_path / "ddp" / "samples.jsonl").read_text()
    _close(_logged(run), _logged(tmp_path / "ddp"))
    assert abs(metrics(run)[0]["objective/kl"]) < 1e-5
    final = load_file(run / "final" / "model.safetensors")
    expected = load_file(tmp_path / "ddp" / "final" / "model.safetensors")
    assert final.keys() == expected.keys()  # whole tensors, the tied head saved once
    for key in final:
        assert final[key].shape == expected[key].shape, key
        torch.testing.assert_close(final[key], expected[key], rtol=1e-4, atol=1e-5)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(run / "final")
    torch.testing.assert_close(model.transformer.wte.weight, final["transformer.wte.weight"])

    resumed = _resume_from_previous_checkpoint(run, tmp_path)
    assert _logged(resumed) == _logged(run)
    again = load_file(resumed / "final" / "model.safetensors")
    assert all(torch.equal(again[k], final[k]) for k in final)
