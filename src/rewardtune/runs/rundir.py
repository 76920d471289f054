"""The run directory: resolved config, metrics.jsonl, samples.jsonl, atomic checkpoints.

Everything here is written so that a kill at any moment leaves the previous state
readable: jsonl files grow by whole lines (a torn last line is dropped when read), and a
checkpoint is written to a temporary folder, fsynced, then renamed into place. A write that
fails for want of space (a full disk, a quota, ``ulimit -f``) is a ``WriteError`` naming the
file and the cause, and leaves nothing half-written behind. One process writes a run at a
time: it holds an OS lock on the folder's lock file (``RunDir.lock``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import resource
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

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
LOCK = ".lock"  # flock-ed by the process that writes the run (train, evaluate)
OVERRIDES = "overrides.jsonl"  # --set at --resume: key, value, the step it took effect
EVAL_HISTORY = "eval_history.jsonl"  # eval.every's evaluations during training, one a line
BEST = "best"  # run.keep_best: the model of the best evaluation during training
_STEP_DIR = re.compile(r"^step-(\d+)$")
_NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
_NO_SPACE[errno.EFBIG] = "file too large (a file-size limit, ulimit -f)"
log = logging.getLogger("rewardtune")


class WriteError(RewardtuneError):
    """A run file could not be written for want of space; nothing half-written was kept."""


class RunLock:
    """An exclusive ``flock`` on a run's lock file, held while this object lives. The OS
    drops it when the process ends, however it ends: a killed run leaves no stale lock."""

    def __init__(self, path: Path, file: IO | None):
        self.path, self._file = path, file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing the file drops the flock
            self._file = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def lock_run(path: Path, action: str) -> RunLock:
    """Lock the run folder ``path`` for ``action`` (what this process is about to do), or say
    in one line that another process holds it. A filesystem without locks only warns."""
    lock_path = path / LOCK
    try:
        file = lock_path.open("a")
    except OSError as err:  # a read-only run: whatever writes it will say so
        log.warning(f"cannot lock {lock_path} ({err.strerror}); make sure one process uses it")
        return RunLock(lock_path, None)
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.close()
        raise RewardtuneError(
            f"run {path} is in use by another rewardtune process (it holds {lock_path}); "
            f"wait for it to end (or stop it) before you {action}"
        ) from None
    except OSError as err:  # e.g. ENOLCK on some network filesystems
        log.warning(f"cannot lock {lock_path} ({err.strerror}); make sure one process uses it")
    return RunLock(lock_path, file)


def in_use(path: Path) -> bool:
    """True while another process holds the run folder's lock."""
    if not (path / LOCK).is_file():
        return False
    try:
        lock_run(path, "").release()
    except RewardtuneError:
        return True
    return False


def write_problem(err: BaseException, path: Path) -> str | None:
    """Why a write under ``path`` failed, when the cause is space (a full disk, a quota, a
    file-size limit), else None. Libraries word it their own way (safetensors: "os error
    28", torch.save: a bare position mismatch), so the limits are checked too."""
    if isinstance(err, OSError) and err.errno in _NO_SPACE:
        return _NO_SPACE[err.errno]
    text = str(err)
    for code, cause in _NO_SPACE.items():
        if f"os error {code})" in text or os.strerror(code) in text:
            return cause
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    files = [path] if path.is_file() else list(path.rglob("*")) if path.is_dir() else []
    if limit != resource.RLIM_INFINITY and any(
        f.is_file() and f.stat().st_size >= limit for f in files
    ):
        return f"a file reached the file-size limit of {limit} bytes (ulimit -f)"
    folder = next((p for p in [path, *path.parents] if p.is_dir()), None)
    if folder is not None:
        stat = os.statvfs(folder)
        if stat.f_bavail * stat.f_frsize < 1 << 20:
            return "the disk is full"
    return None


@contextlib.contextmanager
def writing(
    path: Path, scratch: Path | None = None, cleanup: Callable[[], None] = lambda: None
) -> Iterator[None]:
    """Run a write of ``path`` (through ``scratch``, a temporary file or folder, when set); on
    any failure call ``cleanup`` (remove what is half written), and turn a failure for want
    of space into a one-line ``WriteError``."""
    try:
        yield
    except BaseException as err:
        # a signal (KeyboardInterrupt) or a mistake already in words is never about space
        diagnose = isinstance(err, Exception) and not isinstance(err, RewardtuneError)
        problem = write_problem(err, scratch or path) if diagnose else None
        with contextlib.suppress(OSError):
            cleanup()
        if problem is None:
            raise
        raise WriteError(
            f"cannot write {path}: {problem}; nothing half-written was kept: free space or "
            "raise the limit, then run the command again"
        ) from err


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
    if path.is_dir() and in_use(path):
        raise RewardtuneError(
            f"run directory {path} is in use by a rewardtune process that is still running; "
            "wait for it to end, or choose another --run-dir"
        )
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
    """Every whole record (a JSON object per line) of a jsonl file. A torn last line (a kill
    mid-write) is dropped quietly; any other line that is not a record (torn inside the file,
    or foreign) is skipped with one warning that names the file and the first such line."""
    if not path.exists():
        return []
    rows, bad = [], []
    lines = path.read_text(errors="replace").splitlines()
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        elif line.strip() and not (number == len(lines) and row is None):
            bad.append(number)
    if bad:
        log.warning(
            f"{path}: skipped {len(bad)} line(s) that are not whole JSON records (first: line "
            f"{bad[0]}); using the {len(rows)} whole ones"
        )
    return rows


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` whole: write a temporary file beside it, fsync, rename over it. Two
    processes writing the same file (a report during training) each use their own."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with writing(path, tmp, cleanup=lambda: tmp.unlink(missing_ok=True)):
        with tmp.open("w", encoding="utf-8", errors="backslashreplace") as f:
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

    def initialise(self, config_yaml: str) -> RunLock:
        """Lock the checked folder, empty it (an earlier run that --overwrite replaces), write
        config; the lock is held while the returned object lives."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = self.lock("train into it")
        for child in self.path.iterdir():
            if child.name != LOCK:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        write_atomic(self.path / CONFIG, config_yaml)
        return lock

    def lock(self, action: str) -> RunLock:
        """Hold this run for this process (see ``lock_run``); ``action`` ends the refusal."""
        return lock_run(self.path, action)

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
        """Append whole lines and fsync, so a kill never leaves half a record behind; a write
        that fails (a full disk) is cut back to the lines that were whole before it."""
        if not rows:
            return
        text = "".join(json.dumps(row, default=float) + "\n" for row in rows)
        path = self.path / name
        size = path.stat().st_size if path.exists() else 0
        with writing(path, cleanup=lambda: os.truncate(path, size)), path.open("a") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def record_overrides(self, step: int, changes: list[tuple[str, object, object]]) -> None:
        """``--set`` keys a resume changed: one line each in overrides.jsonl, with the step
        from which the new value applies (secrets come in redacted)."""
        self.append(
            OVERRIDES,
            [{"step": step, "key": key, "value": new, "was": old} for key, old, new in changes],
        )

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
        with writing(final, tmp, cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True)):
            write(tmp)
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
        with writing(target, tmp, lambda: shutil.rmtree(tmp, ignore_errors=True)):
            write(tmp)
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
