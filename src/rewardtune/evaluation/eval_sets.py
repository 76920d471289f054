"""What the evaluation samples on: the held-out prompts (or ``--prompt-file``) and each of
``eval.prompt_sets``, each in every form of ``eval.forms`` (plain text, or wrapped in the chat
template as training wraps it under ``data.chat``). The first set is the primary one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rewardtune.config import Config, DataConfig
from rewardtune.data.columns import ColumnNeed, needed_columns
from rewardtune.data.prompts import (
    PromptSplit,
    fit_prompts,
    format_rows,
    read_prompt_rows,
    read_rows,
    split_prompts,
    tokenize_prompt,
    use_chat_template,
)
from rewardtune.types import Prompt, RewardtuneError

HELD_OUT = "held-out"


@dataclass(frozen=True)
class EvalSet:
    """Prompts evaluated together: ``name`` (held-out, a prompt set, a file) in ``form``."""

    name: str
    form: str  # "plain" | "chat"
    prompts: list[Prompt]

    @property
    def chat(self) -> bool:
        return self.form == "chat"


def eval_forms(cfg: Config) -> list[str]:
    """``eval.forms``, or the form(s) training used."""
    if cfg.eval.forms:
        return cfg.eval.forms
    return {"both": ["plain", "chat"], True: ["chat"], False: ["plain"]}[cfg.data.chat]


def eval_sets(
    cfg: Config, tokenizer, budget: int | None, n: int, prompt_file: Path | None = None
) -> list[EvalSet]:
    """Up to ``n`` prompts of the held-out set (or ``prompt_file``), then of each of
    ``eval.prompt_sets``, each in every form, fitted into ``budget`` tokens. An extra set
    that shares a prompt with training is refused here, before anything is sampled."""
    forms = eval_forms(cfg)
    if "chat" in forms:
        asked, instead = (
            ("eval.forms asks for chat", "drop chat from eval.forms")
            if cfg.eval.forms
            else ("data.chat is true", "data.chat=false")
        )
        use_chat_template(tokenizer, cfg.data.chat_template, asked, instead)
    split = None
    needs = needed_columns(cfg)
    if prompt_file is None or cfg.eval.prompt_sets:
        split = split_prompts(cfg.data, tokenizer, max_tokens=budget, needs=needs)
    if prompt_file is None:
        sets = _held_out_sets(cfg.data, split, forms, n, tokenizer, budget)
    else:
        rows = _file_rows(cfg.data, prompt_file, n, needs)
        sets = [_in_form(prompt_file.name, rows, f, cfg.data, tokenizer, budget) for f in forms]
    for name in cfg.eval.prompt_sets:
        rows = read_prompt_rows(name, cfg.data, "eval.prompt_sets", needs)
        _check_unseen(name, [text for text, _ in rows], split, cfg.data.source)
        sets += [_in_form(name, rows[:n], f, cfg.data, tokenizer, budget) for f in forms]
    return sets


def _held_out_sets(
    data: DataConfig, split: PromptSplit, forms: list[str], n: int, tokenizer, budget
) -> list[EvalSet]:
    """The held-out prompts as training tokenised them, re-wrapped for the other form."""
    prompts = split.held_out[:n]
    if not prompts:
        raise RewardtuneError(
            "this run has no held-out prompts (data.eval_fraction is 0); pass --prompt-file"
        )
    rows = [(p.text, p.columns) for p in prompts]
    return [
        EvalSet(HELD_OUT, form, prompts)
        if (form == "chat") == data.chat
        else _in_form(HELD_OUT, rows, form, data, tokenizer, budget)
        for form in forms
    ]


def _in_form(
    name: str, rows: list[tuple[str, dict]], form: str, data: DataConfig, tokenizer, budget
) -> EvalSet:
    """(text, columns) ``rows`` tokenised in ``form``, as training tokenises a prompt, and
    fitted."""
    chat = form == "chat"
    prompts = [tokenize_prompt(text, tokenizer, chat, None, columns) for text, columns in rows]
    source = data.model_copy(update={"source": name})  # for fit_prompts' messages
    return EvalSet(name, form, fit_prompts(prompts, tokenizer, chat, source, budget))


def _file_rows(
    data: DataConfig, prompt_file: Path, n: int, needs: dict[str, ColumnNeed]
) -> list[tuple[str, dict]]:
    """The first ``n`` prompts of ``--prompt-file`` (text, or jsonl with a ``text`` field and
    the columns the scorers read), with their columns."""
    given = data.model_copy(
        update={
            "source": str(prompt_file),
            "template": "{text}",
            "column": "text",
            "min_chars": 0,
            "max_chars": None,
            "columns": None,
        }
    )
    rows = read_rows(given)
    if not rows:
        raise RewardtuneError(f"--prompt-file {prompt_file} has no prompts")
    return format_rows(rows[:n], given, needs)


def _check_unseen(name: str, texts: list[str], split: PromptSplit, source: str) -> None:
    """An extra prompt set must hold no training prompt."""
    train = {text.strip() for text in split.train_texts}
    shared = next((text for text in texts if text.strip() in train), None)
    if shared is not None:
        raise RewardtuneError(
            f"eval.prompt_sets: {name} holds a training prompt of {source} ({shared.strip()!r}); "
            "an extra set must be prompts training never saw: remove it from the set"
        )
