"""The evaluation's records: one row per sample (a line of eval.jsonl) and the summary
(eval.json). ``to_dict`` gives exactly the JSON those files hold; ``from_dict`` reads it;
``read_evaluation`` is the one reader of a run's evaluation (the report and ``compare`` use it).

They live in ``runs`` so that ``evaluation`` (which writes them) and ``report`` (which reads
them) share one definition.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from rewardtune.runs.rundir import EVAL, EVAL_ROWS, read_jsonl
from rewardtune.types import RewardtuneError

REWARD_TOTAL = "reward/total"  # the total reward's key in a row's scores


@dataclass
class EvalRow:
    """One sample of a held-out prompt, before and after training, with every score, the KL
    estimate of the after sample, and its prompt (sample index // eval.samples_per_prompt)."""

    prompt: str
    before: str
    after: str
    scores_before: dict[str, float]
    scores_after: dict[str, float]
    kl: float
    prompt_id: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, index: int | None = None) -> EvalRow:
        """A line of eval.jsonl; ``index`` (its line number) is the prompt of a row written
        before ``prompt_id`` existed, whose KL is then unknown (NaN)."""
        if index is not None:
            data = {"kl": math.nan, "prompt_id": index} | data
        return cls(**{f.name: data[f.name] for f in fields(cls)})

    @property
    def reward_change(self) -> float:
        return self.scores_after[REWARD_TOTAL] - self.scores_before[REWARD_TOTAL]


@dataclass
class EvalSummary:
    """The metrics table (one ``stats.compare`` row per metric), toxicity, diversity and KL,
    and what was evaluated. ``rows`` are the samples; they go to eval.jsonl, not eval.json."""

    seed: int
    max_new_tokens: int
    samples_per_prompt: int
    bootstrap: int
    metrics: list[dict]
    toxicity: dict | None
    diversity: dict[str, dict[str, float]]
    kl: dict
    checkpoint: str = ""
    n_prompts: int = 0
    reference: str = ""  # what "before" sampled from
    overrides: list[str] = field(default_factory=list)  # `evaluate --set` over config.yaml
    sections: list[EvalSection] = field(default_factory=list)  # other prompt sets and forms
    rows: list[EvalRow] = field(default_factory=list)

    def to_dict(self) -> dict:
        """eval.json's content, keys in the order it has always had, then the sections."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        del data["rows"]
        return data | {"sections": [s.to_dict() for s in self.sections]}

    @classmethod
    def from_dict(cls, data: dict, rows: list[dict] | None = None) -> EvalSummary:
        """Read eval.json (and eval.jsonl's rows); a summary written before
        ``samples_per_prompt`` existed had one sample per prompt, one written before
        ``sections`` existed has none."""
        known = {f.name for f in fields(cls)} - {"rows", "sections"}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("samples_per_prompt", 1)
        sections = [EvalSection.from_dict(s) for s in data.get("sections") or []]
        rows = [EvalRow.from_dict(r, i) for i, r in enumerate(rows or [])]
        return cls(**values, sections=sections, rows=rows)


@dataclass
class EvalSection:
    """The before/after summary of another prompt set or form than the primary one (an
    entry of eval.json's ``sections``); ``summary.rows`` go to eval_sections.jsonl."""

    prompts: str  # "held-out", a prompt set's name or a file
    form: str  # "plain" | "chat"
    summary: EvalSummary

    def to_dict(self) -> dict:
        summary = self.summary.to_dict()
        del summary["sections"]  # a section has none of its own
        n = self.summary.n_prompts
        return {"prompts": self.prompts, "form": self.form, "n_prompts": n, "summary": summary}

    @classmethod
    def from_dict(cls, data: dict) -> EvalSection:
        return cls(data["prompts"], data["form"], EvalSummary.from_dict(data["summary"]))

    @property
    def title(self) -> str:
        return f"{self.prompts} · {self.form}"


def read_evaluation(run_dir: Path) -> EvalSummary | None:
    """A run's evaluation: eval.json with eval.jsonl's rows, None when it was not evaluated;
    an unreadable file is a ``RewardtuneError`` naming it."""
    path = Path(run_dir) / EVAL
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RewardtuneError(f"{path} is not valid JSON ({err}); regenerate or remove it") from err
    try:
        return EvalSummary.from_dict(data, read_jsonl(Path(run_dir) / EVAL_ROWS))
    except (KeyError, TypeError, AttributeError) as err:
        raise RewardtuneError(
            f"{path} is not an evaluation summary rewardtune wrote ({type(err).__name__}: "
            f"{err}); re-run `rewardtune evaluate {run_dir}`"
        ) from err
