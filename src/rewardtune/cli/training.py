"""`rewardtune train`: open the run folder, build the trainer, train with a progress bar,
then write run_info.json and the model card, evaluate and report."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from rewardtune.cli.base import (
    SetOption,
    console,
    evaluate_and_print,
    print_files,
    quiet_libraries,
    say,
    write_model_card,
)
from rewardtune.training.progress_bar import StepProgress

ProcessesOption = Annotated[
    int,
    typer.Option(
        min=1,
        help="Train as N local processes (DDP: one per GPU, or gloo on CPU), through "
        "accelerate's launcher. Same as `accelerate launch --num_processes N -m rewardtune "
        "train ...`, but the config is checked once before any process starts.",
    ),
]


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
    processes: ProcessesOption = 1,
) -> None:
    """Train a policy with PPO, then evaluate it and write the report."""
    from rewardtune.distributed import end
    from rewardtune.training.trainer import PPOTrainer

    quiet_libraries()
    if processes > 1 and not _launched():
        _launch_processes(processes, recipe, set_, resume)
    cfg, run, checkpoint = _open_run(recipe, set_, run_dir, resume, overwrite)
    accelerator = _accelerator(cfg, run.path)
    trainer = PPOTrainer(cfg, run_dir=run, accelerator=accelerator)
    _check_eval_sets(trainer)
    periodic = _periodic_eval(trainer)
    if accelerator.is_main_process and checkpoint is None:
        run.initialise(cfg.to_yaml())  # only now: a config mistake leaves no folder behind
    accelerator.wait_for_everyone()
    _start_trackers(accelerator, cfg, run.path)
    if checkpoint is not None:
        _resume(trainer, checkpoint)
    print_header(trainer, run.path)
    wall = _train(trainer, run.path, periodic)
    if trainer.run is not None:
        trainer.run.add_run_info(wall, trainer.parameters, cfg.model.name, trainer.step_count)
        write_model_card(run.path)
    if cfg.eval.enabled:
        _evaluate_and_report(trainer, run.path)  # every rank samples its share of the prompts
    end(accelerator)


def _open_run(recipe, set_, run_dir: Path | None, resume: Path | None, overwrite: bool):
    """(config, run folder, checkpoint to resume or None). A new run's folder is checked
    here, once, before anything loads; it is written after the trainer is built."""
    from rewardtune.config import load_config
    from rewardtune.runs.checkpoints import usable_checkpoint
    from rewardtune.runs.rundir import RunDir, resolve_run_dir

    if resume is not None:
        run = RunDir.open_existing(resume)
        cfg = load_config(str(run.config_file), set_)
        return cfg, run, usable_checkpoint(run)
    cfg = load_config(recipe, set_)
    path = run_dir or resolve_run_dir(cfg.run.dir, cfg.recipe)
    return cfg, RunDir.new(path, overwrite), None


def _check_eval_sets(trainer) -> None:
    """An unknown or overlapping ``eval.prompt_sets`` entry, or a chat form without a chat
    template, stops the run now rather than after training."""
    from rewardtune.evaluation.eval_sets import eval_sets

    cfg, policy = trainer.config, trainer.policy
    if cfg.eval.enabled and (cfg.eval.forms or cfg.eval.prompt_sets):
        budget = policy.prompt_budget(cfg.eval.max_new_tokens)
        eval_sets(cfg, policy.tokenizer, budget, cfg.eval.prompts)


def _periodic_eval(trainer):
    """``eval.every``'s evaluation during training, or None (built now: a bad
    ``run.keep_best`` stops the run before training)."""
    from rewardtune.evaluation.during import PeriodicEval

    cfg = trainer.config
    return PeriodicEval(trainer) if cfg.eval.enabled and cfg.eval.every else None


def _resume(trainer, checkpoint: Path) -> None:
    trainer.load_checkpoint(checkpoint)
    if trainer.run is not None:
        trainer.run.truncate_logs(trainer.step_count)
    say(trainer.accelerator, f"resuming {escape(str(trainer.run_path))} from {checkpoint.name}")


def _train(trainer, path: Path, periodic=None) -> float:
    """Train to ppo.steps (with ``periodic``, eval.every's evaluation, after each step); the
    wall time in seconds. Interrupted: say how to resume, exit 130."""
    from rewardtune.distributed import end
    from rewardtune.training.trainer import Interrupted

    accelerator, steps = trainer.accelerator, trainer.config.ppo.steps
    started = time.time()
    try:
        with progress(accelerator, steps, trainer.step_count) as update:
            trainer.train(progress=_with_eval(update, periodic))
    except Interrupted:
        say(
            accelerator,
            f"interrupted: checkpoint saved at step {trainer.step_count}. Resume with:\n"
            f"  rewardtune train --resume {escape(str(path))}{_processes_flag(accelerator)}",
        )
        end(accelerator)
        raise typer.Exit(130) from None
    wall = time.time() - started
    say(accelerator, f"trained {steps} steps in {wall:.0f}s -> {escape(str(path / 'final'))}")
    return wall


def _with_eval(update, periodic):
    """The progress callback, then the evaluation during training when one is due."""
    if periodic is None:
        return update

    def step_done(step: int, stats: dict) -> None:
        update(step, stats)
        periodic(step)

    return step_done


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


def _processes_flag(accelerator) -> str:
    n = accelerator.num_processes
    return f" --processes {n}" if n > 1 else ""


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


def _evaluate_and_report(trainer, path: Path) -> None:
    from rewardtune.report.report import write_report

    evaluate_and_print(path, trainer=trainer)
    if trainer.accelerator.is_main_process:
        html, md = write_report(path)
        print_files("report", html, md)
        write_model_card(path)


# -- what the command shows while it runs: the header and the live bar ----------------


def print_header(trainer, path: Path) -> None:
    p, cfg = trainer.parameters, trainer.config
    lm_kind = "LoRA" if trainer.policy.module.has_adapter else "full"
    say(
        trainer.accelerator,
        f"[bold]rewardtune[/] {escape(cfg.recipe)}: model "
        f"{escape(cfg.model.name)} "
        f"({'seq2seq' if trainer.policy.seq2seq else 'causal'}), run dir {escape(str(path))}\n"
        f"trainable {lm_kind} parameters: {p['trainable_lm']:,} | value head: {p['value_head']:,} | "
        f"all: {p['total']:,} ({100 * (p['trainable_lm'] + p['value_head']) / p['total']:.2f}% trainable)\n"
        f"prompts: {len(trainer.train_prompts)} train, {len(trainer.eval_prompts)} eval; "
        f"{cfg.ppo.steps} steps of {cfg.ppo.batch_size}; advantage "
        f"{cfg.ppo.advantage}, {cfg.ppo.samples_per_prompt} per prompt",
    )


def progress(accelerator, total: int, start: int) -> StepProgress:
    """The training bar on the CLI's console, drawn by rank 0 only."""
    return StepProgress(total, start, console, enabled=accelerator.is_main_process)
