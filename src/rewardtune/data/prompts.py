"""Prompt sets: shipped files, local jsonl/csv/parquet/txt, or hub data sets; filtered,
templated, tokenised, and split into train / eval with a seed."""

from __future__ import annotations

import json
import string
from importlib import resources
from pathlib import Path

import numpy as np

from rewardtune.config import DataConfig
from rewardtune.types import Prompt, RewardtuneError

LOCAL_SUFFIXES = {
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
}


def shipped_prompt_sets() -> dict[str, Path]:
    folder = resources.files("rewardtune.data") / "prompt_sets"
    return {
        p.name.removesuffix(".txt"): Path(str(p))
        for p in folder.iterdir()
        if p.name.endswith(".txt")
    }


def read_rows(cfg: DataConfig) -> list[dict]:
    """The raw rows of ``data.source`` as dicts (a .txt file or a shipped set: column ``text``)."""
    shipped = shipped_prompt_sets()
    if cfg.source in shipped:
        return _read_text(shipped[cfg.source])
    path = Path(cfg.source).expanduser()
    if path.suffix in LOCAL_SUFFIXES:
        if not path.is_file():
            raise RewardtuneError(f"data.source: file {path} does not exist")
        if path.suffix == ".txt":
            return _read_text(path)
        if path.suffix == ".jsonl":
            return _read_jsonl(path)
        return _load_with_datasets(
            LOCAL_SUFFIXES[path.suffix], str(path), cfg.split, data_files=str(path)
        )
    if cfg.source.startswith((".", "/", "~")):
        raise RewardtuneError(
            f"data.source: {cfg.source} is not a shipped set ({', '.join(sorted(shipped))}) or a "
            ".jsonl/.csv/.parquet/.txt file"
        )
    return _load_with_datasets(cfg.source, cfg.source, cfg.split)


def _read_text(path: Path) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise RewardtuneError(f"data.source: {path} is not UTF-8 text") from err
    return [{"text": line} for line in lines if line.strip()]


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
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


def template_fields(template: str) -> list[str]:
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def format_prompts(rows: list[dict], cfg: DataConfig) -> list[str]:
    """Length-filter on ``data.column`` and fill ``data.template`` ({text} = that column)."""
    if not rows:
        raise RewardtuneError(f"data.source: {cfg.source} has no rows")
    columns = set(rows[0])
    needed = {cfg.column} | (set(template_fields(cfg.template)) - {"text"})
    missing = sorted(needed - columns)
    if missing:
        raise RewardtuneError(
            f"data: column {missing[0]!r} not in {cfg.source} (columns: {', '.join(sorted(columns))}); "
            "set data.column or data.template"
        )
    texts = []
    for row in rows:
        value = row[cfg.column]
        if not isinstance(value, str):
            continue
        if len(value) < cfg.min_chars or (cfg.max_chars and len(value) > cfg.max_chars):
            continue
        texts.append(cfg.template.format(**{**row, "text": value}))
    if not texts:
        raise RewardtuneError(
            f"data: no prompt of {cfg.source} is left after the length filter "
            f"(min_chars={cfg.min_chars}, max_chars={cfg.max_chars}); widen it"
        )
    return texts


def tokenize_prompt(text: str, tokenizer, chat: bool, query_len: int | None) -> Prompt:
    """Token ids for one prompt; a sampled query length keeps only the first tokens of it."""
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

    return Prompt(text=text, input_ids=torch.tensor(ids, dtype=torch.long))


def load_prompts(
    cfg: DataConfig, tokenizer, chat: bool | None = None
) -> tuple[list[Prompt], list[Prompt]]:
    """(train, eval) prompts: read, filter, template, shuffle with ``data.seed``, split, tokenise."""
    chat = cfg.chat if chat is None else chat
    if chat and cfg.chat_template:
        tokenizer.chat_template = cfg.chat_template
    if chat and not getattr(tokenizer, "chat_template", None):
        raise RewardtuneError(
            "data.chat is true but the tokenizer has no chat template; set data.chat=false"
        )
    texts = format_prompts(read_rows(cfg), cfg)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(texts))
    if cfg.limit:
        order = order[: cfg.limit]
    lengths = (
        rng.integers(cfg.query_tokens[0], cfg.query_tokens[1] + 1, size=len(order))
        if cfg.query_tokens
        else [None] * len(order)
    )
    prompts = [
        tokenize_prompt(texts[i], tokenizer, chat, n and int(n))
        for i, n in zip(order, lengths, strict=True)
    ]
    prompts = [p for p in prompts if len(p.input_ids) > 0]
    n_eval = int(round(len(prompts) * cfg.eval_fraction))
    if len(prompts) - n_eval < 1:
        raise RewardtuneError(
            f"data: only {len(prompts)} prompts; lower data.eval_fraction or add prompts"
        )
    return prompts[n_eval:], prompts[:n_eval]


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
