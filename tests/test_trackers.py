"""Trackers: TensorBoard event files and a W&B offline run hold every stat and the samples."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from conftest import run_cli, set_args, tiny_overrides


def _first_step_stats(run) -> dict[str, float]:
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0
    return {k: v for k, v in first.items() if k != "step" and math.isfinite(v)}


def test_tensorboard_event_files_hold_every_stat_of_the_first_step(two_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = two_runs[0]
    events = EventAccumulator(str(run / "rewardtune"), size_guidance={"tensors": 0}).Reload()
    stats = _first_step_stats(run)
    assert len(stats) >= 17
    scalars = set(events.Tags()["scalars"])
    for name, value in stats.items():
        assert name in scalars, name
        first = events.Scalars(name)[0]
        assert first.step == 0 and first.value == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_tensorboard_gets_the_sample_table_as_text(two_runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = two_runs[0]
    events = EventAccumulator(str(run / "rewardtune"), size_guidance={"tensors": 0}).Reload()
    texts = events.Tensors("samples/text_summary")
    assert [t.step for t in texts] == [0, 1]
    table = texts[0].tensor_proto.string_val[0].decode()
    first = json.loads((run / "samples.jsonl").read_text().splitlines()[0])
    assert table.startswith("| prompt | response | reward |")
    assert first["prompt"] in table


def test_wandb_offline_run_folder_has_every_stat_and_the_samples_table(
    tmp_path, tiny_llama, prompts_file
):
    if importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb is not installed (optional: pip install 'rewardtune[trackers]')")
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_llama, prompts_file, steps=1, **{"run.trackers": "[wandb]"})
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("reward:\n  - {type: vader, input: response}\neval: {enabled: false}\n")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    result = run_cli("train", str(recipe), "--run-dir", str(run), *set_args(overrides), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    folders = sorted((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 1
    summary = json.loads((folders[0] / "files" / "wandb-summary.json").read_text())
    for name in _first_step_stats(run):
        assert name in summary, name
    assert summary["samples"]["_type"] == "table-file"
