"""Prompt sets: shipped files, local jsonl/csv/parquet/txt, or hub data sets; filtered,
templated, tokenised, and split into train / eval with a seed."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from rewardtune.config import DataConfig
from rewardtune.data.columns import ColumnNeed, check_needs, check_selected, row_columns
from rewardtune.text import template_fields, well_formed
from rewardtune.types import Prompt, RewardtuneError

LOCAL_SUFFIXES = {
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
}


SHIPPED_SUFFIXES = (".txt", ".jsonl")  # a shipped set: one prompt a line, or rows with columns


def shipped_prompt_sets() -> dict[str, Path]:
    folder = resources.files("rewardtune.data") / "prompt_sets"
    return {
        p.name.rsplit(".", 1)[0]: Path(str(p))
        for p in folder.iterdir()
        if p.name.endswith(SHIPPED_SUFFIXES)
    }


def read_rows(cfg: DataConfig) -> list[dict]:
    """The raw rows of ``data.source`` as dicts (a .txt file or a shipped .txt set: column
    ``text``; a shipped .jsonl set: its rows)."""
    shipped = shipped_prompt_sets()
    if cfg.source in shipped:
        path = shipped[cfg.source]
        return _read_jsonl(path, "utf-8") if path.suffix == ".jsonl" else _read_text(path, "utf-8")
    path = Path(cfg.source).expanduser()
    if path.suffix in LOCAL_SUFFIXES:
        if not path.is_file():
            raise RewardtuneError(f"data.source: file {path} does not exist")
        if path.suffix == ".txt":
            return _read_text(path, cfg.encoding)
        if path.suffix == ".jsonl":
            return _read_jsonl(path, cfg.encoding)
        extra = {"encoding": _python_encoding(cfg.encoding)} if path.suffix == ".csv" else {}
        if extra:
            decode_text(path, cfg.encoding, "data.source")  # a clear error before pandas'
        return _load_with_datasets(
            LOCAL_SUFFIXES[path.suffix], str(path), cfg.split, data_files=str(path), **extra
        )
    if cfg.source.startswith((".", "/", "~")):
        raise RewardtuneError(
            f"data.source: {cfg.source} is not a shipped set ({', '.join(sorted(shipped))}) or a "
            ".jsonl/.csv/.parquet/.txt file"
        )
    return _load_with_datasets(cfg.source, cfg.source, cfg.split)


def _python_encoding(encoding: str) -> str:
    """UTF-8 files may start with a byte-order mark: skip it."""
    return "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding


def decode_text(path: Path, encoding: str, where: str, flag: str = "data.encoding") -> str:
    """A text file's contents; undecodable bytes name the file, the line and the flag."""
    data = path.read_bytes()
    try:
        return data.decode(_python_encoding(encoding))
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise RewardtuneError(
            f"{where}: {path} line {line} is not {encoding} text; save it as UTF-8 or set "
            f"{flag} (e.g. {flag}=latin-1)"
        ) from err


def read_prompt_file(path: Path, encoding: str) -> list[str]:
    """``generate --prompt-file``: one prompt a line, blank lines skipped."""
    if not path.is_file():
        raise RewardtuneError(f"--prompt-file {path} does not exist")
    try:
        text = decode_text(path, encoding, "--prompt-file", "--encoding")
    except LookupError:
        raise RewardtuneError(
            f"--encoding {encoding!r} is not an encoding (e.g. latin-1)"
        ) from None
    prompts = _lines(text)
    if not prompts:
        raise RewardtuneError(f"--prompt-file {path} has no prompts (one per line)")
    return prompts


def read_prompt_set(name: str, encoding: str, where: str) -> list[str]:
    """The prompts of a shipped prompt set, or of a text file (one a line, blank lines
    skipped); ``where`` (the config key) starts the errors."""
    shipped = shipped_prompt_sets()
    path = shipped[name] if name in shipped else Path(name).expanduser()
    if not path.is_file():
        raise RewardtuneError(
            f"{where}: {name!r} is not a shipped prompt set ({', '.join(sorted(shipped))}) or a "
            "text file; fix the name or the path"
        )
    prompts = _lines(decode_text(path, "utf-8" if name in shipped else encoding, where))
    if not prompts:
        raise RewardtuneError(f"{where}: {name} has no prompts (one per line)")
    return prompts


def read_prompt_rows(
    name: str, cfg: DataConfig, where: str, needs: dict[str, ColumnNeed] | None = None
) -> list[tuple[str, dict]]:
    """(text, columns) of an extra prompt set: a .jsonl set (shipped or a file) read like
    ``data.source`` (``data.column``, ``data.template``, ``data.columns``), its rows' columns
    kept; a text set gives each line with no columns."""
    shipped = shipped_prompt_sets()
    path = shipped[name] if name in shipped else Path(name).expanduser()
    if path.suffix != ".jsonl" or not path.is_file():
        return [(text, {}) for text in read_prompt_set(name, cfg.encoding, where)]
    source = name if name in shipped else str(path)
    given = cfg.model_copy(update={"source": source, "min_chars": 0, "max_chars": None})
    return format_rows(read_rows(given), given, needs)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _read_text(path: Path, encoding: str) -> list[dict]:
    return [{"text": line} for line in _lines(decode_text(path, encoding, "data.source"))]


def _read_jsonl(path: Path, encoding: str) -> list[dict]:
    rows = []
    text = decode_text(path, encoding, "data.source")
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise RewardtuneError(
                f"data.source: {path} line {number} is not valid JSON ({err.msg}); fix or "
                "remove that line"
            ) from err
        if not isinstance(row, dict):
            raise RewardtuneError(f"data.source: {path} line {number} is not a JSON object")
        rows.append(row)
    return rows


def _load_with_datasets(builder: str, name: str, split: str, **kwargs) -> list[dict]:
    import datasets

    try:
        dataset = datasets.load_dataset(builder, split=split, **kwargs)
    except Exception as err:  # datasets raises many types for a missing/bad set
        raise RewardtuneError(
            f"data.source: cannot load {name!r} split {split!r}: {str(err).splitlines()[0][:200]}"
        ) from err
    return dataset.to_list()


def format_prompts(rows: list[dict], cfg: DataConfig) -> list[str]:
    """Length-filter on ``data.column`` and fill ``data.template`` ({text} = that column)."""
    return [text for text, _ in format_rows(rows, cfg)]


def format_rows(
    rows: list[dict], cfg: DataConfig, needs: dict[str, ColumnNeed] | None = None
) -> list[tuple[str, dict]]:
    """(prompt text, the row's other columns) per row kept: ``format_prompts``' texts, with
    the columns ``data.columns`` selects. ``needs`` (column -> the reward that reads it, e.g.
    ``reward.0 (match)``): a kept row without one of them is a RewardtuneError naming it."""
    if not rows:
        raise RewardtuneError(f"data.source: {cfg.source} has no rows")
    needed = {cfg.column} | (set(template_fields(cfg.template)) - {"text"})
    check_selected(cfg, needs or {}, rows)
    texts = []
    for number, row in enumerate(rows, 1):
        missing = sorted(needed - set(row))
        if missing:
            where = f"row {number} of " if number > 1 else ""
            raise RewardtuneError(
                f"data: column {missing[0]!r} not in {where}{cfg.source} (columns: "
                f"{', '.join(sorted(row))}); set data.column or data.template, or fix that row"
            )
        value = row[cfg.column]
        if not isinstance(value, str):
            continue
        if len(value) < cfg.min_chars or (cfg.max_chars and len(value) > cfg.max_chars):
            continue
        columns = row_columns(row, cfg)
        check_needs(columns, needs or {}, number, cfg.source)
        texts.append((cfg.template.format(**{**row, "text": value}), columns))
    if not texts:
        raise RewardtuneError(
            f"data: no prompt of {cfg.source} is left after the length filter "
            f"(min_chars={cfg.min_chars}, max_chars={cfg.max_chars}); widen it"
        )
    return texts


def tokenize_prompt(
    text: str, tokenizer, chat: bool, query_len: int | None, columns: dict | None = None
) -> Prompt:
    """Token ids for one prompt; a sampled query length keeps only the first tokens of it.
    ``columns``: its row's other fields, kept beside it."""
    text = well_formed(text)
    if query_len is not None:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:query_len]
        text = tokenizer.decode(ids, skip_special_tokens=True)
    if chat:
        messages = [{"role": "user", "content": text}]
        formatted = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(formatted, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(text)["input_ids"]
    import torch

    return Prompt(text=text, input_ids=torch.tensor(ids, dtype=torch.long), columns=columns or {})


def fit_prompt(prompt: Prompt, tokenizer, chat: bool, budget: int | None) -> Prompt | None:
    """The prompt cut from the left to at most ``budget`` tokens (its end, where the
    response continues, is kept); None when it already fits."""
    excess = len(prompt.input_ids) - budget if budget else 0
    if excess <= 0:
        return None
    content = tokenizer(prompt.text, add_special_tokens=False)["input_ids"]
    kept = tokenizer.decode(content[excess:], skip_special_tokens=True)
    cut = tokenize_prompt(kept, tokenizer, chat, None)
    # re-tokenising may differ: keep at most the budget
    return Prompt(text=kept, input_ids=cut.input_ids[-budget:], columns=prompt.columns)


def fit_prompts(prompts: list[Prompt], tokenizer, chat: bool, cfg: DataConfig, budget):
    """Every prompt within ``budget`` tokens: cut from the left (saying how many), or a
    RewardtuneError under ``data.truncate: error``."""
    out, n_cut = [], 0
    for prompt in prompts:
        cut = fit_prompt(prompt, tokenizer, chat, budget)
        if cut is not None and cfg.truncate == "error":
            raise RewardtuneError(
                f"data: a prompt of {cfg.source} has {len(prompt.input_ids)} tokens; the model "
                f'takes {budget} beside the response ("{prompt.text[:40]}..."); shorten it, '
                "set data.max_chars, or data.truncate=left to cut long prompts from the left"
            )
        n_cut += cut is not None
        out.append(cut or prompt)
    if n_cut:
        logging.getLogger(__name__).warning(
            f"data: cut {n_cut} of {len(prompts)} prompts from the left to {budget} tokens to fit "
            "the model's context (data.truncate=error refuses them instead)"
        )
    return out


def use_chat_template(tokenizer, template: str | None, asked: str, instead: str) -> None:
    """Give the tokenizer ``template`` (``data.chat_template``) when set; a RewardtuneError
    when chat was ``asked`` for and the tokenizer has no template (``instead``: the way out)."""
    if template:
        tokenizer.chat_template = template
    if not getattr(tokenizer, "chat_template", None):
        raise RewardtuneError(
            f"{asked} but the tokenizer has no chat template; set data.chat_template (a Jinja "
            f"template) or {instead}"
        )


@dataclass
class PromptSplit:
    """The prompts of ``data`` split into training and held-out ones, and the training
    prompts' full texts (template filled, before any cut to a length)."""

    train: list[Prompt]
    held_out: list[Prompt]
    train_texts: list[str]


def load_prompts(
    cfg: DataConfig,
    tokenizer,
    chat: bool | str | None = None,
    max_tokens: int | None = None,
    needs: dict[str, ColumnNeed] | None = None,
) -> tuple[list[Prompt], list[Prompt]]:
    """(train, eval) prompts: read, filter, template, shuffle with ``data.seed``, split,
    tokenise, and fit into ``max_tokens`` (the model's context less the response).

    ``chat`` (default ``data.chat``): true wraps every prompt in the chat template; "both"
    keeps the held-out prompts plain and gives training each prompt twice, plain and then
    wrapped. Each prompt carries its row's columns; ``needs`` (column -> the reward that
    reads it) are checked on every row first."""
    split = split_prompts(cfg, tokenizer, chat, max_tokens, needs)
    return split.train, split.held_out


def split_prompts(
    cfg: DataConfig,
    tokenizer,
    chat: bool | str | None = None,
    max_tokens: int | None = None,
    needs: dict[str, ColumnNeed] | None = None,
) -> PromptSplit:
    """``load_prompts``' split, with the training prompts' full texts."""
    form = cfg.chat if chat is None else chat  # False, True or "both"
    both = form == "both"
    chat = bool(form) and not both  # under "both" the split itself is plain
    if form:
        asked = f"data.chat is {'both' if both else 'true'}"
        use_chat_template(tokenizer, cfg.chat_template, asked, "data.chat=false")
    rows = format_rows(read_rows(cfg), cfg, needs)
    texts = [text for text, _ in rows]
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(texts))
    if cfg.limit:
        order = order[: cfg.limit]
    lengths = (
        rng.integers(cfg.query_tokens[0], cfg.query_tokens[1] + 1, size=len(order))
        if cfg.query_tokens
        else [None] * len(order)
    )
    tokenized = [
        (texts[i], tokenize_prompt(texts[i], tokenizer, chat, n and int(n), rows[i][1]))
        for i, n in zip(order, lengths, strict=True)
    ]
    tokenized = [(text, p) for text, p in tokenized if len(p.input_ids) > 0]
    prompts = fit_prompts([p for _, p in tokenized], tokenizer, chat, cfg, max_tokens)
    n_eval = _held_out_count(len(prompts), cfg)
    train = prompts[n_eval:]
    if both:  # each training prompt, then the same text as a chat turn
        wrapped = [tokenize_prompt(p.text, tokenizer, True, None, p.columns) for p in train]
        wrapped = fit_prompts(wrapped, tokenizer, True, cfg, max_tokens)
        train = [p for pair in zip(train, wrapped, strict=True) for p in pair]
    return PromptSplit(train, prompts[:n_eval], [t for t, _ in tokenized[n_eval:]])


def _held_out_count(n_prompts: int, cfg: DataConfig) -> int:
    n_eval = int(round(n_prompts * cfg.eval_fraction))
    if n_prompts - n_eval < 1:
        raise RewardtuneError(
            f"data: only {n_prompts} prompts; lower data.eval_fraction or add prompts"
        )
    if cfg.eval_fraction > 0 and n_eval == 0:
        raise RewardtuneError(
            f"data: eval_fraction={cfg.eval_fraction} of {n_prompts} prompts leaves no "
            "evaluation prompt; raise data.eval_fraction (or set it to 0 with eval.enabled=false)"
        )
    return n_eval


def batch_indices(n_prompts: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The prompts of step ``step``: consecutive slices of per-epoch seeded permutations.

    A pure function of (seed, step), so a resumed run sees exactly the same batches.
    """
    start = step * batch_size
    indices = []
    while len(indices) < batch_size:
        epoch, offset = divmod(start + len(indices), n_prompts)
        order = np.random.default_rng([seed, epoch]).permutation(n_prompts)
        take = min(batch_size - len(indices), n_prompts - offset)
        indices.extend(int(i) for i in order[offset : offset + take])
    return indices


def sample_lengths(
    low_high: tuple[int, int] | None, n: int, seed: int, step: int
) -> list[int] | None:
    """Per-sample lengths in [low, high] (the classic LengthSampler), seeded by (seed, step)."""
    if low_high is None:
        return None
    rng = np.random.default_rng([seed, step, 1])
    return [int(x) for x in rng.integers(low_high[0], low_high[1] + 1, size=n)]
