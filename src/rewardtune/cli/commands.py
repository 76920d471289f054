"""The commands other than train: recipes, config, init, evaluate, report, compare,
generate, merge."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer

from rewardtune.cli.base import (
    SetOption,
    console,
    evaluate_and_print,
    print_files,
    quiet_libraries,
    write_model_card,
)
from rewardtune.types import RewardtuneError


def recipes(
    show: Annotated[
        str | None, typer.Option(help="Print this recipe's file, comments included.")
    ] = None,
) -> None:
    """List the shipped recipes, or print one with --show NAME."""
    from rewardtune.config import DEFAULT_RECIPE, load_config, recipe_path, shipped_recipes

    if show is not None:
        print(recipe_path(show).read_text(), end="")
        return
    for name in sorted(shipped_recipes()):
        cfg = load_config(name)
        default = "  (default)" if name == DEFAULT_RECIPE else ""
        rewards = ", ".join(r.type for r in cfg.reward)
        print(f"{name:34s} model={cfg.model.name}  reward={rewards}{default}")


def config(
    recipe: Annotated[str | None, typer.Argument(help="Shipped recipe name or YAML path.")] = None,
    set_: SetOption = None,
    schema: Annotated[
        bool, typer.Option(help="Print the JSON Schema of the recipe format instead.")
    ] = False,
) -> None:
    """Print the resolved config of a recipe as YAML (or the recipe format's JSON Schema)."""
    from rewardtune.config import json_schema, load_config

    if schema and (recipe or set_):
        raise RewardtuneError("--schema describes every recipe: give it no RECIPE or --set")
    print(json_schema() if schema else load_config(recipe, set_).to_yaml(), end="")


def init(
    name: Annotated[str, typer.Argument(help="The new recipe's name (writes NAME.yaml here).")],
    from_: Annotated[
        str | None, typer.Option("--from", help="Start from this recipe (default: the default).")
    ] = None,
) -> None:
    """Write a commented starter recipe into the current folder (never overwrites)."""
    from rewardtune.config import starter_recipe

    path = Path(name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if path.exists():
        raise RewardtuneError(f"{path} already exists; choose another name or remove it first")
    path.write_text(starter_recipe(from_, path.name))
    console.print(f"wrote {path}; train it with: rewardtune train {path}", highlight=False)


def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    prompts: Annotated[
        int | None, typer.Option(help="How many held-out prompts (default: eval.prompts).")
    ] = None,
    checkpoint: Annotated[
        str | None, typer.Option(help="Evaluate checkpoints/step-N instead of final/.")
    ] = None,
    prompt_file: Annotated[
        Path | None, typer.Option(help="Evaluate on these prompts (one per line, or jsonl).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override an eval key: --set eval.samples_per_prompt=4."),
    ] = None,
) -> None:
    """Before/after evaluation of a run on held-out prompts, with bootstrap CIs."""
    if prompts is not None and prompts < 1:
        raise RewardtuneError(f"--prompts {prompts}: evaluate at least 1 prompt")
    from rewardtune.distributed import process_state
    from rewardtune.runs.rundir import RunDir

    quiet_libraries()
    options = {"n_prompts": prompts, "checkpoint": checkpoint, "prompt_file": prompt_file}
    options["overrides"] = set_
    run = RunDir.open_existing(run_dir)
    with contextlib.ExitStack() as held:  # not while a training writes the run (rank 0 holds)
        if process_state().is_main_process:
            held.enter_context(run.lock("evaluate it"))
        if evaluate_and_print(run_dir, **options) is not None and checkpoint is None:
            write_model_card(run_dir)  # the card's before/after table is final/'s


def report(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Write report.html (self-contained) and report.md for a run."""
    from rewardtune.report.report import write_report
    from rewardtune.runs.rundir import RunDir

    RunDir.open_existing(run_dir)
    html, md = write_report(run_dir)
    print_files("report", html, md)


def compare(
    runs: Annotated[list[Path], typer.Argument(help="Two or more run directories.")],
    out: Annotated[Path, typer.Option(help="Folder for compare.html and compare.md.")],
) -> None:
    """Compare runs: curves overlaid, evaluations side by side, paired after-differences."""
    from rewardtune.report.compare import write_compare
    from rewardtune.runs.rundir import RunDir

    for run in runs:
        RunDir.open_existing(run)
    html, md = write_compare(runs, out)
    print_files("comparison", html, md)


def generate(
    model: Annotated[
        str, typer.Argument(help="A base model, a run directory, its final/ or a checkpoint.")
    ],
    prompt: Annotated[str | None, typer.Option(help="One prompt.")] = None,
    prompt_file: Annotated[Path | None, typer.Option(help="Prompts, one per line.")] = None,
    encoding: Annotated[str, typer.Option(help="Encoding of --prompt-file.")] = "utf-8",
    chat: Annotated[bool, typer.Option(help="Apply the tokenizer's chat template.")] = False,
    n: Annotated[int, typer.Option(help="Samples per prompt.")] = 1,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 48,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
) -> None:
    """Sample from a model, streaming tokens to the terminal."""
    from rewardtune.inference import generate_stream, resolve_model_path

    quiet_libraries()
    prompts = _read_prompts(prompt, prompt_file, encoding)
    if n < 1 or max_new_tokens < 1:
        raise RewardtuneError("--n and --max-new-tokens must be at least 1")
    generate_stream(resolve_model_path(model), prompts, chat, n, max_new_tokens, seed, sys.stdout)


def _read_prompts(prompt: str | None, prompt_file: Path | None, encoding: str) -> list[str]:
    from rewardtune.data.prompts import read_prompt_file

    if (prompt is None) == (prompt_file is None):
        raise RewardtuneError("give exactly one of --prompt TEXT or --prompt-file FILE")
    return [prompt] if prompt is not None else read_prompt_file(prompt_file, encoding)


def merge(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or its final/).")],
    out_dir: Annotated[Path, typer.Argument(help="Where to write the merged model.")],
) -> None:
    """Merge the LoRA adapter into the base weights: a plain transformers model folder."""
    from rewardtune.inference import merge_run

    quiet_libraries()
    merge_run(run_dir, out_dir)
    write_model_card(run_dir, out_dir, merged=True)
    console.print(f"merged model written to {out_dir}", markup=False, highlight=False)
