"""The `rewardtune` command: train, evaluate, report, compare, generate, merge, recipes, config,
init.

Every user mistake ends as one line on stderr and exit code 2 (RewardtuneError).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rewardtune.types import RewardtuneError

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


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _launched() -> bool:
    """True inside a process started by accelerate launch / torchrun."""
    return "LOCAL_RANK" in os.environ


def _launch_processes(processes: int, recipe, set_, resume) -> None:
    """Check the config here, once, then start ``processes`` copies of this command."""
    from rewardtune.config import load_config
    from rewardtune.distributed import check_divisible, cli_argv, launch, strip_option
    from rewardtune.runs.rundir import RunDir

    source = str(RunDir.open_existing(resume).config_file) if resume is not None else recipe
    cfg = load_config(source, set_)
    check_divisible(
        cfg.ppo.batch_size, cfg.ppo.mini_batch_size, processes, cfg.ppo.samples_per_prompt
    )
    raise typer.Exit(launch(processes, strip_option(cli_argv(), "--processes")))


@app.command()
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


@app.command()
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


@app.command()
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


@app.command()
def train(
    recipe: Annotated[
        str | None,
        typer.Argument(help="Shipped recipe name or YAML path (default: smollm2-detox)."),
    ] = None,
    set_: SetOption = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory (default: run.dir of the recipe).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run from its newest checkpoint.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Train as N local processes (DDP: one per GPU, or gloo on CPU), through "
            "accelerate's launcher. Same as `accelerate launch --num_processes N -m rewardtune "
            "train ...`, but the config is checked once before any process starts.",
        ),
    ] = 1,
) -> None:
    """Train a policy with PPO, then evaluate it and write the report."""
    from rewardtune.config import load_config
    from rewardtune.runs.checkpoint import usable_checkpoint
    from rewardtune.runs.rundir import RunDir, check_new_run_dir, resolve_run_dir
    from rewardtune.training.trainer import Interrupted, PPOTrainer

    _quiet_libraries()
    if processes > 1 and not _launched():
        _launch_processes(processes, recipe, set_, resume)
    if resume is not None:
        run = RunDir.open_existing(resume)
        cfg = load_config(str(run.config_file), set_)
        checkpoint = usable_checkpoint(run)
        path = run.path
    else:
        cfg = load_config(recipe, set_)
        path = run_dir or resolve_run_dir(cfg.run.dir, cfg.recipe)
        check_new_run_dir(path, overwrite)
    accelerator = _accelerator(cfg, path)
    trainer = PPOTrainer(cfg, accelerator=accelerator)
    if accelerator.is_main_process:
        trainer.run = run if resume is not None else RunDir.create(path, cfg.to_yaml(), overwrite)
    trainer.run_path = path
    accelerator.wait_for_everyone()
    _start_trackers(accelerator, cfg, path)
    if resume is not None:
        trainer.load_checkpoint(checkpoint)
        if trainer.run is not None:
            trainer.run.truncate_logs(trainer.step_count)
        _say(accelerator, f"resuming {escape(str(path))} from {checkpoint.name}")
    _print_header(trainer, path)
    started = time.time()
    try:
        with _progress(accelerator, cfg.ppo.steps, trainer.step_count) as update:
            trainer.train(progress=update)
    except Interrupted:
        _say(
            accelerator,
            f"interrupted: checkpoint saved at step {trainer.step_count}. Resume with:\n"
            f"  rewardtune train --resume {escape(str(path))}{_processes_flag(accelerator)}",
        )
        accelerator.end_training()
        raise typer.Exit(130) from None
    wall = time.time() - started
    _say(
        accelerator,
        f"trained {cfg.ppo.steps} steps in {wall:.0f}s -> {escape(str(path / 'final'))}",
    )
    if trainer.run is not None:
        _write_run_info(trainer, wall)
        _write_model_card(path)
    if cfg.eval.enabled:
        _evaluate_and_report(trainer, path)  # every rank samples its share of the prompts
    accelerator.end_training()


def _processes_flag(accelerator) -> str:
    n = accelerator.num_processes
    return f" --processes {n}" if n > 1 else ""


def _write_run_info(trainer, wall_time_s: float) -> None:
    import json

    from rewardtune.runs.rundir import write_atomic

    info_path = trainer.run.path / "run_info.json"
    previous = json.loads(info_path.read_text()) if info_path.exists() else {}
    info = {
        "wall_time_s": previous.get("wall_time_s", 0.0) + wall_time_s,  # summed over resumes
        "parameters": trainer.parameters,
        "model": trainer.config.model.name,
        "steps_done": trainer.step_count,
    }
    write_atomic(info_path, json.dumps(info, indent=2))


def _accelerator(cfg, path: Path):
    from rewardtune.distributed import make_accelerator

    return make_accelerator([t for t in cfg.run.trackers if t != "jsonl"], str(path))


def _start_trackers(accelerator, cfg, path: Path) -> None:
    from rewardtune.distributed import start_trackers

    flat = {
        k: v
        for k, v in _flatten(cfg.public_dump()).items()
        if isinstance(v, int | float | str | bool)
    }
    start_trackers(accelerator, flat, str(path))


def _flatten(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= _flatten(value, name + ".")
        else:
            out[name] = value
    return out


def _say(accelerator, text: str) -> None:
    if accelerator.is_main_process:
        console.print(text, highlight=False)


def _print_header(trainer, path: Path) -> None:
    p = trainer.parameters
    lm_kind = "LoRA" if trainer.policy.module.has_adapter else "full"
    _say(
        trainer.accelerator,
        f"[bold]rewardtune[/] {escape(trainer.config.recipe)}: model "
        f"{escape(trainer.config.model.name)} "
        f"({'seq2seq' if trainer.policy.seq2seq else 'causal'}), run dir {escape(str(path))}\n"
        f"trainable {lm_kind} parameters: {p['trainable_lm']:,} | value head: {p['value_head']:,} | "
        f"all: {p['total']:,} ({100 * (p['trainable_lm'] + p['value_head']) / p['total']:.2f}% trainable)\n"
        f"prompts: {len(trainer.train_prompts)} train, {len(trainer.eval_prompts)} eval; "
        f"{trainer.config.ppo.steps} steps of {trainer.config.ppo.batch_size}; advantage "
        f"{trainer.config.ppo.advantage}, {trainer.config.ppo.samples_per_prompt} per prompt",
    )


class _progress:
    """A live bar: step, reward mean, KL, seconds per step (rank 0 only)."""

    def __init__(self, accelerator, total: int, start: int):
        self.enabled = accelerator.is_main_process
        self.total, self.start = total, start
        self.bar = Progress(
            TextColumn("[bold]PPO"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not self.enabled,
        )
        self.last = time.perf_counter()

    def __enter__(self):
        self.bar.start()
        self.task = self.bar.add_task("ppo", total=self.total, completed=self.start, info="")
        return self.update

    def update(self, step: int, stats: dict) -> None:
        now = time.perf_counter()
        info = (
            f"reward {stats['env/reward_mean']:+.3f}  kl {stats['objective/kl']:.3f}  "
            f"{now - self.last:.1f}s/step"
        )
        self.last = now
        self.bar.update(self.task, completed=step, info=info)

    def __exit__(self, *exc):
        self.bar.stop()
        return False


def _evaluate_and_report(trainer, path: Path) -> None:
    from rewardtune.evaluation.evaluate import evaluate_run, print_summary
    from rewardtune.report.report import write_report

    summary = evaluate_run(path, trainer=trainer)
    if trainer.accelerator.is_main_process:
        print_summary(summary, console)
        html, md = write_report(path)
        console.print(f"report: {html}  {md}", markup=False, highlight=False)
        _write_model_card(path)


def _write_model_card(run_dir: Path, folder: Path | None = None, merged: bool = False) -> None:
    """README.md for final/ or a merge of it (not of a checkpoint: a card describes final/)."""
    from rewardtune.report.model_card import run_root, write_model_card

    if run_root(run_dir) is None:
        return
    card = write_model_card(run_dir, folder, merged)
    console.print(f"model card: {card}", markup=False, highlight=False)


@app.command()
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
) -> None:
    """Before/after evaluation of a run on held-out prompts, with bootstrap CIs."""
    from rewardtune.evaluation.evaluate import evaluate_run, print_summary

    if prompts is not None and prompts < 1:
        raise RewardtuneError(f"--prompts {prompts}: evaluate at least 1 prompt")
    _quiet_libraries()
    summary = evaluate_run(
        run_dir, n_prompts=prompts, checkpoint=checkpoint, prompt_file=prompt_file
    )
    if summary:  # rank 0 under several processes
        print_summary(summary, console)
        if checkpoint is None:  # the card's before/after table is final/'s
            _write_model_card(run_dir)


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Write report.html (self-contained) and report.md for a run."""
    from rewardtune.report.report import write_report
    from rewardtune.runs.rundir import RunDir

    RunDir.open_existing(run_dir)
    html, md = write_report(run_dir)
    console.print(f"report: {html}  {md}", markup=False, highlight=False)


@app.command()
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
    console.print(f"comparison: {html}  {md}", markup=False, highlight=False)


@app.command()
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

    _quiet_libraries()
    prompts = _read_prompts(prompt, prompt_file, encoding)
    if n < 1 or max_new_tokens < 1:
        raise RewardtuneError("--n and --max-new-tokens must be at least 1")
    generate_stream(resolve_model_path(model), prompts, chat, n, max_new_tokens, seed, sys.stdout)


def _read_prompts(prompt: str | None, prompt_file: Path | None, encoding: str) -> list[str]:
    from rewardtune.data.prompts import read_prompt_file

    if (prompt is None) == (prompt_file is None):
        raise RewardtuneError("give exactly one of --prompt TEXT or --prompt-file FILE")
    return [prompt] if prompt is not None else read_prompt_file(prompt_file, encoding)


@app.command()
def merge(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (or its final/).")],
    out_dir: Annotated[Path, typer.Argument(help="Where to write the merged model.")],
) -> None:
    """Merge the LoRA adapter into the base weights: a plain transformers model folder."""
    from rewardtune.inference import merge_run

    _quiet_libraries()
    merge_run(run_dir, out_dir)
    _write_model_card(run_dir, out_dir, merged=True)
    console.print(f"merged model written to {out_dir}", markup=False, highlight=False)


def _print_error(text: str) -> None:
    """One line on stderr. Under several processes the same mistake usually stops every
    rank: rank 0 reports it and the launcher ends the others when it exits, so a later rank
    waits a moment and speaks only about a mistake that it alone ran into."""
    rank = int(os.environ.get("RANK", "0"))
    if rank > 0:
        time.sleep(5)
        text = f"(rank {rank}) {text}"
    console.print(f"error: {text}", highlight=False, markup=False, soft_wrap=True)


def main() -> None:
    try:
        code = app(standalone_mode=False)  # click returns typer.Exit's code in this mode
        if isinstance(code, int) and code:
            sys.exit(code)
    except RewardtuneError as err:
        _print_error(str(err))
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.BadParameter, typer.Abort) as err:
        console.print(f"error: {err}", highlight=False, markup=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted", highlight=False)
        sys.exit(130)
    except Exception as err:
        # usage errors: typer vendors its own click, so match the interface, not the class
        if hasattr(err, "format_message") and getattr(err, "exit_code", None) == 2:
            console.print(
                f"error: {err.format_message()}", highlight=False, markup=False, soft_wrap=True
            )
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
