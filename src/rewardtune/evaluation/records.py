"""The evaluation's records: one row per sample (a line of eval.jsonl) and the summary
(eval.json). ``to_dict`` gives exactly the JSON those files hold; ``from_dict`` reads it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from rewardtune.evaluation.metrics import REWARD_TOTAL


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
    def from_dict(cls, data: dict) -> EvalRow:
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
    rows: list[EvalRow] = field(default_factory=list)

    def to_dict(self) -> dict:
        """eval.json's content, keys in the order it has always had."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rows"}

    @classmethod
    def from_dict(cls, data: dict, rows: list[dict] | None = None) -> EvalSummary:
        """Read eval.json (and eval.jsonl's rows); a summary written before
        ``samples_per_prompt`` existed had one sample per prompt."""
        known = {f.name for f in fields(cls)} - {"rows"}
        values = {k: v for k, v in data.items() if k in known}
        values.setdefault("samples_per_prompt", 1)
        return cls(**values, rows=[EvalRow.from_dict(r) for r in rows or []])
