"""The README's Python snippets run as written (on the tiny model); the trainer's summary."""

from __future__ import annotations

import re

import pytest

import rewardtune
from conftest import ROOT, tiny_overrides

STEPS = 2


def readme_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


@pytest.fixture
def tiny_load_config(monkeypatch, tiny_llama, prompts_file):
    """``rewardtune.load_config`` with the tiny model and prompts added after the snippet's own
    overrides (which still apply where the tiny ones say nothing)."""
    real = rewardtune.load_config
    tiny = tiny_overrides(tiny_llama, prompts_file, steps=STEPS)

    def load_config(recipe=None, overrides=None):
        return real(recipe, [*(overrides or []), *tiny])

    monkeypatch.setattr(rewardtune, "load_config", load_config)


def test_readme_has_the_two_python_snippets():
    snippets = readme_snippets()
    assert len(snippets) == 2
    assert "trainer.train()" in snippets[0] and "trainer.dataloader" in snippets[1]


def test_readme_snippets_run_as_written(tiny_load_config, capsys):
    first, classic = readme_snippets()
    namespace: dict = {}
    exec(compile(first, "README.md snippet 1", "exec"), namespace)
    reward_mean, kl = capsys.readouterr().out.split()
    assert float(reward_mean) == namespace["history"][-1]["env/reward_mean"]
    assert namespace["trainer"].step_count == STEPS
    exec(compile(classic, "README.md snippet 2", "exec"), namespace)
    trainer = namespace["trainer"]
    assert "stats" in namespace, "the classic loop ran no step"
    assert trainer.step_count == STEPS and namespace["stats"] == trainer.last_stats


def test_trainer_summary_and_html_show_model_reward_steps_and_last_stats(tiny_load_config):
    trainer = rewardtune.PPOTrainer(rewardtune.load_config("smollm2-detox"))
    assert "none yet" in trainer.summary()
    stats = trainer.train()[-1]
    text = trainer.summary()
    assert re.search(rf"^steps +{STEPS} of {STEPS}$", text, flags=re.M)
    assert "profanity × 1.0" in text and "(LoRA)" in text
    assert f"{stats['env/reward_mean']:.4g}" in text
    html = trainer._repr_html_()
    assert html.startswith("<table>") and "<th style='text-align:left'>objective/kl</th>" in html
    assert str(rewardtune.load_config("smollm2-detox").model.name) in html
