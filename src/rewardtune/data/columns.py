"""The columns of a data row that travel with its prompt: which ones (``data.columns``), the
checks that every row has those the rewards read, and a batch's columns as rewards take them
(name -> one value per prompt)."""

from __future__ import annotations

from dataclasses import dataclass, field

from rewardtune.config import Config, DataConfig
from rewardtune.config.base import Section
from rewardtune.types import Prompt, RewardtuneError


@dataclass
class ColumnNeed:
    """A column some sections read: the first of them (``reward.0 (match)``), for the error
    when a row lacks it, and all of them, each of which checks a row's value."""

    reader: str
    specs: list[Section] = field(default_factory=list)


def needed_columns(cfg: Config) -> dict[str, ColumnNeed]:
    """Every data column a reward, an extra scorer or the toxicity scorer reads -> who reads
    it (the evaluation's scorers only with ``eval.enabled``: otherwise none of them runs)."""
    specs = [(f"reward.{i}", spec) for i, spec in enumerate(cfg.reward)]
    if cfg.eval.enabled:
        extras = enumerate(cfg.eval.extra_scorers)
        specs += [(f"eval.extra_scorers.{i}", spec) for i, spec in extras]
        specs += [("eval.toxicity", cfg.eval.toxicity)] if cfg.eval.toxicity is not None else []
    needs: dict[str, ColumnNeed] = {}
    for where, spec in specs:
        for column in sorted(spec.needs_columns()):
            needs.setdefault(column, ColumnNeed(f"{where} ({spec.type})")).specs.append(spec)
    return needs


def row_columns(row: dict, cfg: DataConfig) -> dict:
    """The fields of ``row`` that travel with its prompt: ``data.columns`` (default: every
    field but the prompt column)."""
    names = cfg.columns if cfg.columns is not None else [k for k in row if k != cfg.column]
    return {name: row[name] for name in names if name in row}


def check_selected(cfg: DataConfig, needs: dict[str, ColumnNeed], rows: list[dict]) -> None:
    """``data.columns`` names columns of the data and keeps every one a reward reads."""
    known = set().union(*rows)
    unknown = [name for name in cfg.columns or [] if name not in known]
    if unknown:
        raise RewardtuneError(
            f"data.columns: {unknown[0]!r} is not a column of {cfg.source} (columns: "
            f"{', '.join(sorted(known))}); fix the name or remove it"
        )
    left_out = sorted(set(needs) - set(cfg.columns)) if cfg.columns is not None else []
    if left_out:
        raise RewardtuneError(
            f"data.columns leaves out {left_out[0]!r}, which {needs[left_out[0]].reader} reads; "
            "add it to data.columns (or drop data.columns to keep every column)"
        )


def check_needs(columns: dict, needs: dict[str, ColumnNeed], number: int, source: str) -> None:
    """Row ``number`` (its ``columns``) has every column in ``needs``, not null, and each
    section that reads one accepts its value (``check_column``: e.g. well-formed constraints)."""
    missing = sorted(name for name in needs if columns.get(name) is None)
    if missing:
        raise RewardtuneError(
            f"data: row {number} of {source} has no column {missing[0]!r}, which "
            f"{needs[missing[0]].reader} reads (columns: {', '.join(sorted(columns)) or 'none'}); "
            "add it to that row, or remove the row"
        )
    for name, need in needs.items():
        for spec in need.specs:
            spec.check_column(name, columns[name], f"data: {name!r} of row {number} of {source}")


def column_lists(prompts: list[Prompt]) -> dict[str, list]:
    """The prompts' columns as a reward takes them: name -> one value per prompt (None where
    a prompt's row lacks it)."""
    names = list(dict.fromkeys(name for p in prompts for name in p.columns))
    return {name: [p.columns.get(name) for p in prompts] for name in names}
