"""Evaluation statistics with several samples per prompt: intervals that resample prompts,
and the RealToxicityPrompts pair (expected maximum toxicity, toxicity probability)."""

from __future__ import annotations

import numpy as np
import pytest

from rewardtune import stats
from rewardtune.config import load_config
from rewardtune.evaluation.summary import summarise

# two prompts, three samples each
CLUSTERS = np.array([0, 0, 0, 1, 1, 1])


def test_cluster_bootstrap_resamples_prompts_not_samples():
    # prompt 0's samples all score 1, prompt 1's all 0. Drawing 2 prompts with replacement
    # gives a mean of 0 (p = 1/4), 0.5 (p = 1/2) or 1 (p = 1/4): the 95% interval is [0, 1].
    values = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    assert stats.cluster_bootstrap_ci(values, CLUSTERS, 1000, 0) == (0.0, 1.0)
    # treating the six samples as independent understates the uncertainty
    low, high = stats.cluster_bootstrap_ci(values, None, 1000, 0)
    assert low > 0.0 and high < 1.0


def test_cluster_bootstrap_weights_each_sample_not_each_prompt_mean():
    # prompt 0 has samples 0 and 1, prompt 1 has one sample, 1. Draws: {0, 0} -> 2/4 = 0.5
    # (p 1/4); {0, 1} -> (0 + 1 + 1) / 3 = 2/3 (p 1/2); {1, 1} -> 1 (p 1/4). The 40th and
    # 60th percentiles (level 0.2) fall inside the middle half: 2/3 (a mean of prompt means
    # would say (0.5 + 1) / 2 = 0.75).
    low, high = stats.cluster_bootstrap_ci([0.0, 1.0, 1.0], [0, 0, 1], 1000, 0, level=0.2)
    assert low == pytest.approx(2 / 3) and high == pytest.approx(2 / 3)


def test_cluster_ids_need_not_be_sorted_or_consecutive():
    values = np.array([1.0, 0.0, 1.0, 0.0])
    assert stats.cluster_bootstrap_ci(values, [7, 3, 7, 3], 1000, 0) == (0.0, 1.0)


def test_expected_max_toxicity_and_toxicity_probability_by_hand():
    toxicity = np.array([0.1, 0.7, 0.2, 0.3, 0.4, 0.45])
    # worst sample per prompt: max(0.1, 0.7, 0.2) = 0.7, max(0.3, 0.4, 0.45) = 0.45
    assert stats.max_per_prompt(toxicity, CLUSTERS).tolist() == [0.7, 0.45]
    assert stats.expected_max_toxicity(toxicity, CLUSTERS) == pytest.approx((0.7 + 0.45) / 2)
    # prompt 0 has a sample >= 0.5, prompt 1 none: 1 of 2 prompts
    assert stats.toxicity_probability(toxicity, CLUSTERS) == 0.5


def test_a_sample_of_exactly_one_half_counts_as_toxic():
    assert stats.toxicity_probability([0.5, 0.1], [0, 0]) == 1.0


def test_summary_has_the_per_prompt_toxicity_rows_and_the_empty_share():
    cfg = load_config(None, ["eval.samples_per_prompt=3", "eval.bootstrap=200"])
    before = {"toxicity": [0.1, 0.7, 0.2, 0.3, 0.4, 0.45], "empty": [0, 0, 0, 0, 0, 1.0]}
    after = {"toxicity": [0.1, 0.2, 0.2, 0.3, 0.1, 0.1], "empty": [0.0] * 6}
    texts = (["a b"] * 6, ["a b"] * 6)
    summary = summarise(cfg.eval, before, after, texts, np.zeros(6), CLUSTERS).to_dict()
    rows = {m["name"]: m for m in summary["metrics"]}
    # expected max 0.575 -> (0.2 + 0.3) / 2 = 0.25; toxicity probability 1/2 -> 0
    assert rows["toxicity/expected_max"]["before"]["mean"] == pytest.approx(0.575)
    assert rows["toxicity/expected_max"]["after"]["mean"] == pytest.approx(0.25)
    assert rows["toxicity/probability"]["diff"] == pytest.approx(-0.5)
    assert rows["empty"]["before"]["mean"] == pytest.approx(1 / 6)
    tox = summary["toxicity"]
    assert tox["before"]["probability"] == 0.5 and tox["after"]["probability"] == 0.0
    low, high = tox["before"]["expected_max_ci"]
    assert low == pytest.approx(0.45) and high == pytest.approx(0.7)  # 2 prompts: {0.45, 0.7}
    assert summary["samples_per_prompt"] == 3


def test_evaluation_samples_each_prompt_k_times_and_tags_each_row_with_its_prompt(
    tmp_path, tiny_llama, prompts_file
):
    import yaml

    from conftest import tiny_overrides
    from rewardtune import PPOTrainer
    from rewardtune.evaluation.evaluate import evaluate_run
    from rewardtune.runs.rundir import RunDir

    recipe = tmp_path / "eval.yaml"
    recipe.write_text(
        yaml.safe_dump({"reward": [{"type": "vader"}], "eval": {"toxicity": {"type": "profanity"}}})
    )
    overrides = tiny_overrides(
        tiny_llama,
        prompts_file,
        steps=0,
        **{"eval.samples_per_prompt": 3, "eval.max_new_tokens": 8},
    )
    config = load_config(str(recipe), overrides)
    trainer = PPOTrainer(config, run_dir=RunDir.create(tmp_path / "run", config.to_yaml()))
    summary = evaluate_run(tmp_path / "run", trainer)
    rows = [r.to_dict() for r in summary.rows]
    assert summary.n_prompts == 2 and len(rows) == 6
    assert [r["prompt_id"] for r in rows] == [0, 0, 0, 1, 1, 1]
    assert len({r["prompt"] for r in rows[:3]}) == 1 and rows[0]["prompt"] != rows[3]["prompt"]
    assert len({r["after"] for r in rows[:3]}) > 1  # three draws, not one copied
    names = {m["name"] for m in summary.metrics}
    assert {"toxicity/expected_max", "toxicity/probability", "empty", "length"} <= names


def test_evaluation_builds_each_scorer_once(tmp_path, tiny_llama, prompts_file, monkeypatch):
    from conftest import tiny_overrides
    from rewardtune import PPOTrainer
    from rewardtune.evaluation.evaluate import evaluate_run
    from rewardtune.rewards.base import WeightedReward
    from rewardtune.runs.rundir import RunDir

    config = load_config(None, tiny_overrides(tiny_llama, prompts_file, steps=0))
    trainer = PPOTrainer(config, run_dir=RunDir.create(tmp_path / "run", config.to_yaml()))
    built = []
    init = WeightedReward.__init__
    monkeypatch.setattr(WeightedReward, "__init__", lambda s, *a: built.append(1) or init(s, *a))
    evaluate_run(tmp_path / "run", trainer)
    assert len(built) == 1  # one reward for both sides, not one per side


def test_a_vader_column_gets_its_positive_rate_row_and_other_columns_do_not():
    cfg = load_config(None, ["eval.samples_per_prompt=3", "eval.bootstrap=200"])
    # compound > 0.05 is positive: 0.05 itself is not
    before = {"extra/vader": [0.05, -0.3, 0.6, 0.0, 0.2, -0.9], "extra/other": [0.9] * 6}
    after = {"extra/vader": [0.4, 0.5, 0.6, 0.06, 0.2, -0.1], "extra/other": [0.9] * 6}
    texts = (["a b"] * 6, ["a b"] * 6)
    summary = summarise(cfg.eval, before, after, texts, np.zeros(6), CLUSTERS).to_dict()
    rows = {m["name"]: m for m in summary["metrics"]}
    assert rows["extra/vader/positive"]["before"]["mean"] == pytest.approx(2 / 6)
    assert rows["extra/vader/positive"]["after"]["mean"] == pytest.approx(5 / 6)
    assert rows["extra/vader/positive"]["higher_is_better"] is True
    assert "extra/other/positive" not in rows


def test_distinct_n_counts_unique_word_ngrams_over_every_response():
    # "a b a b" and "A b": bigrams (a b) (b a) (a b) + (a b) -> 2 unique of 4; case is ignored
    assert stats.distinct_n(["a b a b", "A b"], 2) == 0.5
    assert stats.distinct_n(["a b a b", "A b"], 1) == 2 / 6
    assert stats.distinct_n(["one", ""], 2) == 0.0  # no bigram at all
