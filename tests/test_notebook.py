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
    assert len(snippets) == 3  # the third, a reward with a column: tests/test_columns.py
    assert "trainer.train()" in snippets[0] and "trainer.dataloader" in snippets[1]


def test_readme_snippets_run_as_written(tiny_load_config, capsys):
    first, classic = readme_snippets()[:2]
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


def test_train_with_progress_true_runs_a_live_bar_to_the_last_step(tiny_load_config, monkeypatch):
    from rewardtune.training import trainer as trainer_module
    from rewardtune.training.progress_bar import StepProgress

    finished = []

    class Recording(StepProgress):
        def __exit__(self, *exc):
            finished.append(self.completed)
            return super().__exit__(*exc)

    monkeypatch.setattr(trainer_module, "StepProgress", Recording)
    trainer = rewardtune.PPOTrainer(rewardtune.load_config("smollm2-detox"))
    trainer.train(progress=True)
    assert finished == [STEPS]


def test_the_progress_bar_draws_into_a_jupyter_output_widget(monkeypatch):
    """In Jupyter rich renders a live display into an ipywidgets Output; stand-ins for IPython
    and ipywidgets record what the bar showed there."""
    import io
    import sys
    import types

    from rich.console import Console

    from rewardtune.training.progress_bar import StepProgress

    shown: list[str] = []

    class Output:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def clear_output(self, wait=False):
            pass

    display = types.ModuleType("IPython.display")
    display.display = lambda widget: shown.append("widget")
    ipython = types.ModuleType("IPython")
    ipython.display = display
    widgets = types.ModuleType("ipywidgets")
    widgets.Output = Output
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    monkeypatch.setitem(sys.modules, "ipywidgets", widgets)
    console = Console(force_jupyter=True, file=io.StringIO(), record=True, width=100)
    with StepProgress(3, console=console) as update:
        for step in (1, 2, 3):
            update(step, {"env/reward_mean": 0.25, "objective/kl": 0.5})
    assert shown  # drawn through IPython.display into an Output widget
    drawn = console.export_text()
    assert "3/3" in drawn and "reward +0.250" in drawn
