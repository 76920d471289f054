"""Evaluation with the checks against the data (issue 21): pass@k and mean@k of 0/1 scores,
the evaluation during training (eval.every) with its curves, run.keep_best, an exact resume
of its history, and `rewardtune evaluate --set`."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import CORPUS, run_cli, set_args, tiny_overrides
from rewardtune.config import Config
from rewardtune.evaluation.summary import summarise

HELPERS = Path(__file__).parent / "helpers"


def test_pass_and_mean_at_k_of_a_binary_check_resample_prompts():
    ev = Config(reward=[{"type": "vader"}], eval={"samples_per_prompt": 2, "bootstrap": 200}).eval
    # 3 prompts x 2 samples: before passes prompt 0 once; after passes prompts 0 (twice) and 1
    before = {"extra/match": [1.0, 0.0, 0.0, 0.0, 0.0, 0.0], "extra/score": [0.5] * 6}
    after = {"extra/match": [1.0, 1.0, 0.0, 1.0, 0.0, 0.0], "extra/score": [0.7] * 6}
    texts = (["a"] * 6, ["b"] * 6)
    summary = summarise(ev, before, after, texts, np.zeros(6), np.repeat(np.arange(3), 2))
    rows = {m["name"]: m for m in summary.metrics}
    assert rows["extra/match/pass@2"]["before"]["mean"] == pytest.approx(1 / 3)
    assert rows["extra/match/pass@2"]["after"]["mean"] == pytest.approx(2 / 3)
    assert rows["extra/match/mean@2"]["before"]["mean"] == pytest.approx(1 / 6)
    assert rows["extra/match/mean@2"]["after"]["mean"] == pytest.approx(1 / 2)
    assert "extra/score/pass@2" not in rows  # not a 0/1 score
    one = Config(reward=[{"type": "vader"}]).eval
    single = summarise(one, before, after, texts, np.zeros(6))
    assert not any("pass@" in m["name"] for m in single.metrics)  # k = 1: no pass@k


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    texts = sorted(set(CORPUS))
    rows = [{"text": t, "answer": t.split()[-1], "key": i} for i, t in enumerate(texts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "during.yaml"
    spec = {"type": "python", "function": f"{HELPERS / 'rewards.py'}:column_reward"}
    check = {"type": "match", "column": "answer", "extract": "regex:(\\w+)\\W*$"}
    eval_ = {
        "every": 1,
        "every_prompts": 3,
        "extra_scorers": [check],
        "toxicity": {"type": "profanity"},
    }
    path.write_text(yaml.safe_dump({"reward": [spec], "eval": eval_}))
    return path


def history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "eval_history.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def args(tiny_llama, rows_file, recipe) -> list[str]:
    extra = {"ppo.learning_rate": 1e-2, "run.keep_best": "kl", "run.save_every": 2}
    return ["train", str(recipe), *set_args(tiny_overrides(tiny_llama, rows_file, 4, **extra))]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, args) -> Path:
    work = tmp_path_factory.mktemp("straight")
    result = run_cli(*args, "--run-dir", str(work / "run"), env={"RT_COLUMNS_DIR": str(work)})
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "run"


def test_eval_every_writes_its_history_curves_and_the_best_model(straight):
    lines = history(straight)
    assert [line["step"] for line in lines] == [0, 1, 2, 3]  # metrics.jsonl's steps
    assert set(lines[0]) == {"step", "reward/total", "toxicity", "extra/match", "kl"}
    assert all(0 <= line["extra/match"] <= 1 for line in lines)
    assert all(np.isfinite(line["kl"]) and line["kl"] != 0 for line in lines)
    best = json.loads((straight / "best" / "best.json").read_text())
    values = [line["kl"] for line in lines]
    assert best["metric"] == "kl" and best["value"] == min(values)
    assert best["step"] == values.index(min(values)) + 1
    assert (straight / "best" / "adapter_model.safetensors").is_file()
    report = (straight / "report.md").read_text()
    assert "Held-out evaluation during training (every 1 steps" in report


def test_resume_keeps_the_evaluation_history_exact(tmp_path, args, straight):
    """Killed in step 4 after the checkpoint of step 2: the history of step 3 is redone.
    The reward is called twice a step (training, then the evaluation): call 7 is step 4's."""
    run = tmp_path / "run"
    env = {"RT_COLUMNS_DIR": str(tmp_path), "RT_COUNTER": str(tmp_path / "n"), "RT_KILL_AT": "7"}
    killed = run_cli(*args, "--run-dir", str(run), env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(history(run)) == 3
    resumed = run_cli("train", "--resume", str(run), env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert history(run) == history(straight)
    assert json.loads((run / "best" / "best.json").read_text()) == json.loads(
        (straight / "best" / "best.json").read_text()
    )


def test_evaluate_set_overrides_eval_keys_and_records_them(straight, tmp_path):
    sets = ["eval.samples_per_prompt=2", "eval.prompts=3"]
    result = run_cli(
        "evaluate", str(straight), *set_args(sets), env={"RT_COLUMNS_DIR": str(tmp_path)}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((straight / "eval.json").read_text())
    assert summary["overrides"] == sets and summary["samples_per_prompt"] == 2
    names = {m["name"] for m in summary["metrics"]}
    assert {"extra/match/pass@2", "extra/match/mean@2"} <= names
    card = (straight / "final" / "README.md").read_text()
    assert "match pass@2" in card
    bad = run_cli("evaluate", str(straight), "--set", "ppo.steps=3")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: --set 'ppo.steps=3': evaluate changes only eval settings (eval.KEY=VALUE, e.g. "
        "eval.samples_per_prompt=4); the rest is the run's own"
    ]


def test_keep_best_needs_eval_every_and_a_known_metric(tmp_path, tiny_llama, rows_file, recipe):
    base = tiny_overrides(tiny_llama, rows_file, 1)
    result = run_cli("train", str(recipe), *set_args([*base, "eval.every=0", "run.keep_best=kl"]))
    assert result.returncode == 2
    assert "run.keep_best (kl) picks by the evaluation during training" in result.stderr
    result = run_cli(
        "train",
        str(recipe),
        *set_args([*base, "run.keep_best=extra/nope"]),
        "--run-dir",
        str(tmp_path / "run"),
        env={"RT_COLUMNS_DIR": str(tmp_path)},
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line == (
        "error: run.keep_best: 'extra/nope' is not a metric of the evaluation during training; "
        "choose one of reward/total, toxicity, extra/match, kl"
    )


def test_two_extra_scorers_of_one_type_keep_both_columns():
    from rewardtune.evaluation.scoring import Scorers

    checks = [{"type": "match", "column": "a"}, {"type": "match", "column": "b"}]
    cfg = Config(reward=[{"type": "vader"}], eval={"extra_scorers": checks})
    scores = Scorers.build(cfg.reward, cfg.eval).score(["p"], ["it is 1"], {"a": ["1"], "b": ["2"]})
    assert scores["extra/match#0"] == [1.0] and scores["extra/match#1"] == [0.0]
