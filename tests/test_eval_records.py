"""The evaluation's records and metric registry: eval.json / eval.jsonl shapes, each metric's
label and direction defined once, run_info.json summed over resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rewardtune.config import load_config
from rewardtune.evaluation import metrics
from rewardtune.evaluation.scoring import Scorers
from rewardtune.evaluation.summary import summarise
from rewardtune.runs.eval_records import EvalRow, EvalSection, EvalSummary
from rewardtune.runs.rundir import RUN_INFO, RunDir
from rewardtune.types import RewardtuneError


def test_eval_row_carries_kl_and_prompt_in_the_eval_jsonl_order():
    row = EvalRow("p", "b", "a", {"reward/total": 0.25}, {"reward/total": 1.0}, kl=0.5, prompt_id=3)
    data = row.to_dict()
    assert list(data) == [
        "prompt", "before", "after", "scores_before", "scores_after", "kl", "prompt_id"
    ]  # fmt: skip
    assert EvalRow.from_dict(json.loads(json.dumps(data))) == row
    assert row.reward_change == 0.75


def test_summary_to_dict_is_eval_json_without_rows_and_reads_back():
    cfg = load_config(None, ["eval.bootstrap=100"])
    scores = {"reward/total": [0.0, 1.0], "length": [3.0, 4.0]}
    summary = summarise(cfg.eval, scores, scores, (["a"] * 2, ["b"] * 2), np.zeros(2))
    summary.rows = [EvalRow("p", "b", "a", {}, {}, kl=0.0, prompt_id=0)]
    data = summary.to_dict()
    assert list(data) == [
        "seed", "max_new_tokens", "samples_per_prompt", "bootstrap", "metrics", "toxicity",
        "diversity", "kl", "checkpoint", "n_prompts", "reference", "overrides", "sections",
    ]  # fmt: skip
    assert data["sections"] == []
    assert EvalSummary.from_dict(json.loads(json.dumps(data))).to_dict() == data
    old = {k: v for k, v in data.items() if k not in ("samples_per_prompt", "sections")}
    assert EvalSummary.from_dict(old).samples_per_prompt == 1  # written before groups
    assert EvalSummary.from_dict(old).sections == []  # written before sections


def test_a_section_is_its_prompts_form_count_and_a_summary_without_sections():
    cfg = load_config(None, ["eval.bootstrap=100"])
    scores = {"reward/total": [0.0, 1.0, 0.5]}
    summary = summarise(cfg.eval, scores, scores, (["a"] * 3, ["b"] * 3), np.zeros(3))
    section_summary = summarise(cfg.eval, scores, scores, (["c"] * 3, ["d"] * 3), np.zeros(3))
    section_summary.n_prompts = 3
    summary.sections = [EvalSection("detox-forum", "chat", section_summary)]
    data = json.loads(json.dumps(summary.to_dict()))
    [section] = data["sections"]
    assert {k: section[k] for k in ("prompts", "form", "n_prompts")} == {
        "prompts": "detox-forum",
        "form": "chat",
        "n_prompts": 3,
    }
    assert list(section["summary"]) == [k for k in data if k != "sections"]
    again = EvalSummary.from_dict(data)
    assert again.sections[0].title == "detox-forum · chat"
    assert again.to_dict() == data


def test_every_metric_row_takes_label_and_direction_from_the_registry():
    cfg = load_config(None, ["eval.bootstrap=100", "eval.toxicity.type=profanity"])
    names = ["reward/total", "reward/vader", "toxicity", "extra/vader", "extra/length", "empty"]
    scores = {name: [0.1, 0.9, 0.2] for name in names}
    summary = summarise(cfg.eval, scores, scores, (["a"] * 3, ["b"] * 3), np.zeros(3))
    rows = {m["name"]: m for m in summary.metrics}
    derived = [m.name for m in metrics.TOXICITY_METRICS]
    assert list(rows) == [
        "reward/total",
        "reward/vader",
        "reward/vader/positive",  # a VADER column's positive rate follows it
        "toxicity",
        *derived,
        "extra/vader",
        "extra/vader/positive",
        "extra/length",
        "empty",
    ]
    for name, row in rows.items():
        metric = metrics.metric(name)
        assert (row["label"], row["higher_is_better"]) == (metric.label, metric.higher_is_better)
    assert (
        rows["reward/vader"]["higher_is_better"] is True
        and rows["reward/vader"]["label"] == "vader"
    )
    assert rows["extra/length"]["higher_is_better"] is None  # the scorer's type is unknown here
    assert rows["toxicity/flagged"]["label"] == "Flagged rate (P>0.5)"


def test_an_extra_scorer_takes_its_direction_from_its_type():
    cfg = load_config(
        None,
        [
            "eval.bootstrap=100",
            'eval.extra_scorers=[{"type": "constraints"}, {"type": "python", '
            '"function": "builtins:len", "name": "mine"}]',
        ],
    )
    scorers = Scorers.build(cfg.reward, cfg.eval)
    assert scorers.directions == {"extra/constraints": True, "extra/mine": None}
    scores = {"extra/constraints": [0.1, 0.9, 0.2], "extra/mine": [1.0, 2.0, 3.0]}
    texts = (["a"] * 3, ["b"] * 3)
    summary = summarise(cfg.eval, scores, scores, texts, np.zeros(3), None, scorers.directions)
    rows = {m["name"]: m["higher_is_better"] for m in summary.metrics}
    assert rows == {"extra/constraints": True, "extra/mine": None}


def test_sample_measures_by_hand():
    side = metrics.Measured(["hi", "  "], np.array([-2.0, -3.0]), np.array([2.0, 3.0]))
    measured = metrics.sample_measures(side)
    assert list(measured) == ["perplexity", "length", "empty"]
    assert measured["perplexity"] == pytest.approx([np.e, np.e])  # exp(2/2), exp(3/3)
    assert measured["length"] == [2.0, 3.0] and measured["empty"] == [0.0, 1.0]


def test_run_info_sums_wall_time_over_resumes(tmp_path):
    run = RunDir.create(tmp_path / "run", "model: {}\n")
    run.add_run_info(10.0, {"total": 5}, "tiny", 2)
    run.add_run_info(2.5, {"total": 5}, "tiny", 4)
    info = json.loads((run.path / RUN_INFO).read_text())
    assert info == {
        "wall_time_s": 12.5,
        "parameters": {"total": 5},
        "model": "tiny",
        "steps_done": 4,
    }


def test_a_new_run_is_checked_before_anything_is_written(tmp_path):
    path = tmp_path / "run"
    run = RunDir.new(path)
    assert not path.exists()  # written only by initialise, after the models load
    run.initialise("model: {}\n")
    assert run.config_file.read_text() == "model: {}\n"
    (path / "x").write_text("")
    with pytest.raises(RewardtuneError, match="already exists"):
        RunDir.new(path)
