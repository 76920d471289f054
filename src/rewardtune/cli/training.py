"""`rewardtune train`: open the run folder, build the trainer, train with a progress bar,
then write run_info.json and the model card, evaluate and report. However it ends (a signal,
a reward that fails, a full disk) it says in one line where the run stands and what to type
next."""

from __future__ import annotations

import contextlib
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

# the exit code of a run stopped by SIGINT, SIGTERM or SIGHUP, whichever phase it was in and
# whichever process got the signal (every process of a run exits with the same code)
INTERRUPTED = 130

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
        Path | None,
        typer.Option(
            help="Continue this run from its newest checkpoint. `auto`: continue the run "
            "directory (--run-dir, or run.dir) when it holds a checkpoint, else start it there, "
            "so a requeued job reruns one unchanged command."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    processes: ProcessesOption = 1,
) -> None:
    """Train a policy with PPO, then evaluate it and write the report."""
    from rewardtune.training.signals import stop_on_signals

    quiet_libraries()
    if resume == AUTO:
        resume, overwrite = _auto_resume(recipe, set_, run_dir, overwrite)
    if processes > 1 and not _launched():
        _launch_processes(processes, recipe, set_, resume)
    cfg, run, changes = _open_run(recipe, set_, run_dir, resume, overwrite)
    with stop_on_signals() as stop:
        try:
            _train_evaluate_report(cfg, run, resume is not None, changes)
        except KeyboardInterrupt:  # a signal outside the training loop, or a second one
            _say_interrupted(run.path, stop.signum)
            raise typer.Exit(INTERRUPTED) from None


def _train_evaluate_report(cfg, run, resumed: bool, changes: list) -> None:
    """The run itself, holding its folder's lock (rank 0) from before the models load (a
    resume) or from the moment the folder is written (a new run) until the end."""
    from rewardtune.distributed import end
    from rewardtune.runs.checkpoints import usable_checkpoint
    from rewardtune.training.trainer import PPOTrainer

    accelerator = _accelerator(cfg, run.path)
    with contextlib.ExitStack() as held:
        if resumed and accelerator.is_main_process:
            held.enter_context(run.lock("resume it"))
        checkpoint = usable_checkpoint(run) if resumed else None
        trainer = PPOTrainer(cfg, run_dir=run, accelerator=accelerator)
        _check_eval_sets(trainer)
        periodic = _periodic_eval(trainer)
        if accelerator.is_main_process and checkpoint is None:
            # only now: a config mistake leaves no folder behind
            held.enter_context(run.initialise(cfg.to_yaml()))
        accelerator.wait_for_everyone()
        _start_trackers(accelerator, cfg, run.path)
        if checkpoint is not None:
            _resume(trainer, checkpoint, changes)
        print_header(trainer, run.path)
        with _say_how_to_go_on(trainer, run.path):
            wall = _train(trainer, run.path, periodic)
            if trainer.run is not None:
                trainer.run.add_run_info(
                    wall, trainer.parameters, cfg.model.name, trainer.step_count
                )
                write_model_card(run.path)
            if cfg.eval.enabled:  # every rank samples its share of the prompts
                _evaluate_and_report(trainer, run.path)
        end(accelerator)


AUTO = Path("auto")


def _auto_resume(recipe, set_, run_dir: Path | None, overwrite: bool) -> tuple[Path | None, bool]:
    """``--resume auto``: (the run to resume, or None to start one; overwrite). A run folder
    that a kill left without any checkpoint is started over (rewardtune wrote it)."""
    from rewardtune.config import load_config
    from rewardtune.runs.rundir import RunDir, is_run_dir, resolve_run_dir
    from rewardtune.types import RewardtuneError

    if run_dir is None:
        cfg = load_config(recipe, set_)
        if "{time}" in cfg.run.dir:
            raise RewardtuneError(
                f"--resume auto needs a fixed run directory, but run.dir ({cfg.run.dir}) names "
                "a new one each time; add --run-dir DIR"
            )
        run_dir = resolve_run_dir(cfg.run.dir, cfg.recipe)
    if not is_run_dir(run_dir):
        return None, overwrite  # a new run (a folder with other files in it is refused)
    if RunDir(run_dir).checkpoints():
        return run_dir, overwrite
    return None, True


def _open_run(recipe, set_, run_dir: Path | None, resume: Path | None, overwrite: bool):
    """(config, run folder, what --set changes at a resume). A new run's folder is checked
    here, once, before anything loads; it is written after the trainer is built. A resume
    refuses a --set that would make it another experiment (``load_resume_config``)."""
    from rewardtune.config import load_config, load_resume_config
    from rewardtune.runs.rundir import RunDir, resolve_run_dir

    if resume is not None:
        run = RunDir.open_existing(resume)
        cfg, changes = load_resume_config(str(run.config_file), set_)
        return cfg, run, changes
    cfg = load_config(recipe, set_)
    path = run_dir or resolve_run_dir(cfg.run.dir, cfg.recipe)
    return cfg, RunDir.new(path, overwrite), []


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


def _resume(trainer, checkpoint: Path, changes: list) -> None:
    """Load the checkpoint, drop the log lines of the steps it redoes; the --set changes
    apply from its step on: recorded in overrides.jsonl, and config.yaml rewritten."""
    from rewardtune.runs.rundir import write_atomic
    from rewardtune.types import RewardtuneError

    trainer.load_checkpoint(checkpoint)
    step, steps = trainer.step_count, trainer.config.ppo.steps
    if steps < step:
        raise RewardtuneError(
            f"ppo.steps={steps}, but {checkpoint} has done {step} steps; resume with "
            f"--set ppo.steps={step} or more"
        )
    if trainer.run is not None:
        trainer.run.truncate_logs(step)
        if changes:
            trainer.run.record_overrides(step, changes)
            write_atomic(trainer.run.config_file, trainer.config.to_yaml())
    say(trainer.accelerator, f"resuming {escape(str(trainer.run_path))} from {checkpoint.name}")
    for key, old, new in changes:
        say(trainer.accelerator, f"  {key}: {escape(repr(old))} -> {escape(repr(new))}")


def _train(trainer, path: Path, periodic=None) -> float:
    """Train to ppo.steps (with ``periodic``, eval.every's evaluation, after each step); the
    wall time in seconds. Interrupted: say how to resume, exit 130."""
    from rewardtune.distributed import end
    from rewardtune.training.signals import signal_name
    from rewardtune.training.trainer import Interrupted

    accelerator, steps = trainer.accelerator, trainer.config.ppo.steps
    started = time.time()
    try:
        with progress(accelerator, steps, trainer.step_count) as update:
            trainer.train(progress=_with_eval(update, periodic))
    except Interrupted as stop:
        say(
            accelerator,
            f"interrupted{signal_name(stop.signum)}: checkpoint saved at step "
            f"{trainer.step_count}. Resume with:\n  {escape(_resume_command(path, accelerator))}",
        )
        end(accelerator)
        raise typer.Exit(INTERRUPTED) from None
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


def _resume_command(path: Path, accelerator=None) -> str:
    """Plain text (print it with markup off)."""
    flag = _processes_flag(accelerator) if accelerator is not None else ""
    return f"rewardtune train --resume {path}{flag}"


def _where_it_stands(path: Path, accelerator=None) -> str:
    """What a stopped run has kept, and the command that goes on from there (plain text)."""
    from rewardtune.runs.rundir import RunDir

    run = RunDir(path)
    if not run.config_file.is_file():
        return "nothing was written yet"
    kept = run.checkpoints()
    if not kept:
        return f"no step was saved yet: start again (add --overwrite to reuse {path})"
    return f"{kept[-1].name} is kept; go on with: {_resume_command(path, accelerator)}"


@contextlib.contextmanager
def _say_how_to_go_on(trainer, path: Path):
    """A reward that fails or a disk that fills up stops the run with one line that says what
    is kept and how to go on. A reward that fails in the training loop of a single process
    checkpoints the last whole step first, unless it is saved already (the state is whole:
    the reward runs before the step changes anything, and each step reseeds the RNG; several
    processes would have to agree on saving)."""
    from rewardtune.rewards.base import RewardFailed
    from rewardtune.runs.rundir import WriteError
    from rewardtune.types import RewardtuneError

    try:
        yield
    except (RewardFailed, WriteError) as err:
        step, saved = trainer.step_count, trainer.checkpoints.saved_step
        if isinstance(err, RewardFailed) and trainer.world == 1 and 0 < step != saved:
            trainer.save_checkpoint()
        hint = _where_it_stands(path, trainer.accelerator)
        raise RewardtuneError(f"{err}; {hint}") from err


def _say_interrupted(path: Path, signum: int | None) -> None:
    """After a stop signal outside the training loop (or a second one inside it)."""
    from rewardtune.distributed import process_state
    from rewardtune.training.signals import signal_name

    if process_state().is_main_process:
        from rewardtune.cli.base import console

        text = f"interrupted{signal_name(signum)}: {_where_it_stands(path)}"
        console.print(text, highlight=False, markup=False)


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
