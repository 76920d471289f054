"""What the reports read from a run directory, and the run facts more than one report states."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rewardtune.rewards import describe_term
from rewardtune.runs.eval_records import EvalRow, EvalSummary, read_evaluation
from rewardtune.runs.rundir import CONFIG, EVAL_HISTORY, METRICS, RUN_INFO, SAMPLES, read_jsonl
from rewardtune.types import RewardtuneError


@dataclass
class RunData:
    """Everything the report reads; optional files come back empty or None."""

    config: dict
    metrics: list[dict]
    samples: list[dict]
    run_info: dict | None
    eval_summary: EvalSummary | None  # eval.json, None until the run is evaluated
    eval_history: list[dict] = field(default_factory=list)  # eval.every's evaluations

    @property
    def eval_rows(self) -> list[EvalRow]:
        """eval.jsonl's samples (none until the run is evaluated)."""
        return self.eval_summary.rows if self.eval_summary is not None else []

    @property
    def steps_done(self) -> object:
        """The steps run_info.json counts, else the number of logged metric rows."""
        return (self.run_info or {}).get("steps_done", len(self.metrics))


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RewardtuneError(f"{path} is not valid JSON ({err}); regenerate or remove it") from err


def _read_config(path: Path) -> dict:
    if not path.is_file():
        raise RewardtuneError(f"{path.parent} is not a rewardtune run directory (no {CONFIG})")
    try:
        data = yaml.safe_load(path.read_text(errors="replace")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise RewardtuneError(
            f"{path} is not valid YAML{where}: the run's config is damaged"
        ) from None
    if not isinstance(data, dict):
        raise RewardtuneError(
            f"{path} is not a mapping of config sections: the run's config is damaged"
        )
    return data


def load_run(run_dir: Path) -> RunData:
    return RunData(
        config=_read_config(run_dir / CONFIG),
        metrics=read_jsonl(run_dir / METRICS),
        samples=read_jsonl(run_dir / SAMPLES),
        run_info=_read_json(run_dir / RUN_INFO),
        eval_summary=read_evaluation(run_dir),
        eval_history=read_jsonl(run_dir / EVAL_HISTORY),
    )


def reward_text(config: dict) -> str:
    """Every reward term of a config joined by ' + ' ('' when there is none)."""
    return " + ".join(describe_term(t) for t in config.get("reward") or [])
