"""What every command shares: the typer app, the stderr console, --set, quiet libraries."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from rewardtune.runs.eval_records import EvalSummary

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="RLHF with PPO on Hugging Face language models.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key: --set ppo.learning_rate=3e-5 (repeatable)."),
]


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def say(accelerator, text: str) -> None:
    """Print on rank 0 only."""
    if accelerator.is_main_process:
        console.print(text, highlight=False)


def print_files(kind: str, *paths) -> None:
    console.print(f"{kind}: {'  '.join(str(p) for p in paths)}", markup=False, highlight=False)


def write_model_card(run_dir: Path, folder: Path | None = None, merged: bool = False) -> None:
    """README.md for final/ or a merge of it (not of a checkpoint: a card describes final/)."""
    from rewardtune.report import model_card

    if model_card.run_root(run_dir) is None:
        return
    card = model_card.write_model_card(run_dir, folder, merged)
    print_files("model card", card)


def evaluate_and_print(run_dir: Path, **options) -> EvalSummary | None:
    """Evaluate a run and print the summary on rank 0; the summary there, None elsewhere."""
    from rewardtune.evaluation.console import print_summary
    from rewardtune.evaluation.evaluate import evaluate_run

    summary = evaluate_run(run_dir, **options)
    if summary is not None:  # rank 0 under several processes
        print_summary(summary, console)
    return summary
