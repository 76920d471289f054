"""The run directory: resolved config, metrics.jsonl, samples.jsonl, atomic checkpoints.

Everything here is written so that a kill at any moment leaves the previous state
readable: jsonl files grow by whole lines (a torn last line is dropped when read), and a
checkpoint is written to a temporary folder, fsynced, then renamed into place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from rewardtune.types import RewardtuneError

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
CHECKPOINTS = "checkpoints"
FINAL = "final"
STATE = "trainer_state.json"  # written last: a checkpoint without it is incomplete
RUN_INFO = "run_info.json"  # wall time (summed over resumes), parameter counts, steps done
EVAL = "eval.json"  # the evaluation's summary
EVAL_ROWS = "eval.jsonl"  # its samples, one per line
EVAL_SECTION_ROWS = "eval_sections.jsonl"  # the samples of eval.json's sections
EVAL_HISTORY = "eval_history.jsonl"  # eval.every's evaluations during training, one a line
BEST = "best"  # run.keep_best: the model of the best evaluation during training
_STEP_DIR = re.compile(r"^step-(\d+)$")


def resolve_run_dir(template: str, recipe: str) -> Path:
    """Fill ``{recipe}`` and ``{time}`` in ``run.dir``; names may not climb out with '..'."""
    name = template.format(recipe=recipe, time=time.strftime("%Y%m%d-%H%M%S"))
    if ".." in Path(name).parts:
        raise RewardtuneError(f"run.dir {template!r}: '..' is not allowed in a run directory name")
    return Path(name)


def is_run_dir(path: Path) -> bool:
    """A folder rewardtune wrote: its config.yaml is a mapping of the config's sections."""
    import yaml

    try:
        data = yaml.safe_load((path / CONFIG).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and {"model", "reward", "ppo", "run"} <= set(data)


def check_new_run_dir(path: Path, overwrite: bool) -> None:
    """Refuse, before anything is written, a run directory that cannot be created, or one
    that --overwrite would delete though rewardtune did not write it."""
    if path.exists() and not path.is_dir():
        raise RewardtuneError(f"run directory {path} is a file; choose a folder name")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise RewardtuneError(
                f"run directory {path} already exists; add --resume {path} to continue it or "
                "--overwrite to start over"
            )
        if not is_run_dir(path):
            raise RewardtuneError(
                f"run directory {path} is not empty and is not a rewardtune run (no {CONFIG} "
                "written by rewardtune); --overwrite only replaces runs: choose another folder"
            )
        here = Path.cwd().resolve()
        if path.resolve() == here or path.resolve() in here.parents:
            raise RewardtuneError(
                f"--overwrite would delete {path}, which holds the current directory; "
                "run from elsewhere or choose another folder"
            )
    parent = next((p for p in [path, *path.absolute().parents] if p.exists()), Path("/"))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise RewardtuneError(
            f"cannot create run directory {path}: {parent} is not a writable folder"
        )


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with file.open("rb") as f:
                os.fsync(f.fileno())
    fsync_dir(path)


def read_jsonl(path: Path) -> list[dict]:
    """Every complete line of a jsonl file; a torn last line (a kill mid-write) is dropped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)  # the rename itself survives a power loss


class RunDir:
    """One run's folder; rank 0 alone writes to it."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    # -- creation -------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, config_yaml: str, overwrite: bool = False) -> RunDir:
        run = cls.new(path, overwrite)
        run.initialise(config_yaml)
        return run

    @classmethod
    def new(cls, path: Path, overwrite: bool = False) -> RunDir:
        """The folder of a new run, checked (see ``check_new_run_dir``) but not yet written:
        every process knows it before the models load, rank 0 then ``initialise``s it."""
        check_new_run_dir(path, overwrite)
        return cls(path)

    def initialise(self, config_yaml: str) -> None:
        """Empty the checked folder (an earlier run that --overwrite replaces), write config."""
        if self.path.exists() and any(self.path.iterdir()):
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path / CONFIG, config_yaml)

    @classmethod
    def open_existing(cls, path: Path | str) -> RunDir:
        run = cls(path)
        if not (run.path / CONFIG).is_file():
            raise RewardtuneError(f"{path} is not a rewardtune run directory (no {CONFIG})")
        return run

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def final_dir(self) -> Path:
        return self.path / FINAL

    def add_run_info(self, wall_time_s: float, parameters: dict, model: str, steps: int) -> None:
        """Write run_info.json; a resumed run adds its wall time to the earlier sessions'."""
        path = self.path / RUN_INFO
        previous = json.loads(path.read_text()) if path.exists() else {}
        info = {
            "wall_time_s": previous.get("wall_time_s", 0.0) + wall_time_s,
            "parameters": parameters,
            "model": model,
            "steps_done": steps,
        }
        write_atomic(path, json.dumps(info, indent=2))

    # -- jsonl logs -----------------------------------------------------------------

    def append(self, name: str, rows: list[dict]) -> None:
        """Append whole lines and fsync, so a kill never leaves half a record behind."""
        if not rows:
            return
        text = "".join(json.dumps(row, default=float) + "\n" for row in rows)
        with (self.path / name).open("a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def read(self, name: str) -> list[dict]:
        return read_jsonl(self.path / name)

    def truncate_logs(self, step: int) -> None:
        """Keep only the records of steps before ``step`` (a resume redoes the rest)."""
        for name in (METRICS, SAMPLES, EVAL_HISTORY):
            rows = [r for r in self.read(name) if r.get("step", 0) < step]
            if (self.path / name).exists():
                write_atomic(self.path / name, "".join(json.dumps(r) + "\n" for r in rows))

    # -- checkpoints ----------------------------------------------------------------

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        folder = self.path / CHECKPOINTS
        if not folder.is_dir():
            return []
        found = []
        for child in folder.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / STATE).is_file():
                found.append((int(match.group(1)), child))
        return [path for _, path in sorted(found)]

    def checkpoint_dir(self, name: str | None = None) -> Path:
        """A checkpoint by name (``step-N``), or the newest complete one."""
        complete = self.checkpoints()
        if name is None:
            if not complete:
                raise RewardtuneError(f"{self.path} has no complete checkpoint to resume from")
            return complete[-1]
        path = self.path / CHECKPOINTS / name
        if path not in complete:
            names = ", ".join(p.name for p in complete) or "none"
            raise RewardtuneError(
                f"checkpoint {name!r} not found in {self.path} (complete ones: {names})"
            )
        return path

    def save_checkpoint(self, step: int, write: Callable[[Path], None], keep: int) -> Path:
        """Write into a temporary folder, fsync, rename to ``step-N``; keep the newest ``keep``."""
        folder = self.path / CHECKPOINTS
        folder.mkdir(exist_ok=True)
        final = folder / f"step-{step}"
        tmp = folder / f".tmp-step-{step}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        write(tmp)  # a write that fails leaves tmp aside; the next save removes it
        fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(folder)
        for old in self.checkpoints()[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in folder.glob(".tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
        return final

    def save_final(self, write: Callable[[Path], None], name: str = FINAL) -> Path:
        """``final/`` (or ``best/``) is replaced whole: written beside it, then renamed over
        it."""
        target = self.path / name
        tmp = self.path / f".{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        write(tmp)  # a write that fails leaves tmp aside; the next save removes it
        fsync_tree(tmp)
        old = self.path / f".{name}.old"
        if old.exists():  # left by a crash between the two renames below
            shutil.rmtree(old)
        if target.exists():
            os.rename(target, old)
        os.rename(tmp, target)
        fsync_dir(self.path)
        shutil.rmtree(old, ignore_errors=True)
        return target


def read_state(checkpoint: Path) -> dict:
    try:
        return json.loads((checkpoint / STATE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RewardtuneError(
            f"checkpoint {checkpoint} is unreadable ({err}); delete it to use an older one"
        ) from err
