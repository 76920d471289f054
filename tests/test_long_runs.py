"""Faults of long runs on shared machines (issue 25): a second process on the run folder, a
full disk or a file-size limit, a scheduler's signal, overrides at resume, reward backends
that fail or lie, odd text, and a damaged run folder. A run never loses a finished step,
never logs a step twice, and ends with one line that says what happened and what to type."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import yaml

from conftest import ROOT, run_cli, set_args, tiny_overrides
from rewardtune.config import validate
from rewardtune.rewards import build_reward
from rewardtune.runs.rundir import EVAL, METRICS, RunDir, write_atomic
from rewardtune.types import RewardtuneError

HELPERS = Path(__file__).parent / "helpers"
REWARDS = HELPERS / "rewards.py"
# characters that must never reach a terminal or a report raw: NUL, ESC, CR alone, zero-width
# space, joiner and BOM, bidi overrides and isolates, a lone surrogate
UNSAFE = "\x00\x1b\u200b\u200d\ufeff\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ud800"


def write_recipe(path: Path, reward: dict, eval_enabled: bool = False) -> Path:
    path.write_text(yaml.safe_dump({"reward": [reward], "eval": {"enabled": eval_enabled}}))
    return path


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recipes")
    return write_recipe(
        folder / "long.yaml", {"type": "python", "function": f"{REWARDS}:length_reward"}
    )


@pytest.fixture(scope="module")
def tiny(tiny_llama, prompts_file) -> list[str]:
    return set_args(tiny_overrides(tiny_llama, prompts_file, steps=2))


@pytest.fixture(scope="module")
def finished(tmp_path_factory, recipe, tiny) -> Path:
    """A finished 2-step run (checkpoints step-1 and step-2, final/, no evaluation)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    result = run_cli("train", str(recipe), "--run-dir", str(run), *tiny)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def copy_run(run: Path, tmp_path: Path, name: str = "run") -> Path:
    shutil.copytree(run, tmp_path / name)
    return tmp_path / name


def steps_logged(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / METRICS).read_text().splitlines()]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def last_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def assert_one_line_error(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    line = last_line(result)
    assert line.startswith("error: "), result.stderr[-3000:]
    for text in expected:
        assert text in line, line
    return line


def lock_is_held(run: Path) -> bool:
    """Whether some process holds the flock on the run's lock file."""
    if not (run / ".lock").is_file():
        return False
    with (run / ".lock").open("a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def wait_for(condition, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out waiting"
        time.sleep(0.05)


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": "200"} | (env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "rewardtune", *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- 1: two processes on one run folder ------------------------------------------------


def hold_lock(run: Path) -> subprocess.Popen:
    """Another process holding the run's lock, as a training in progress does."""
    code = (
        "import fcntl, sys, time\n"
        f"f = open({str(run / '.lock')!r}, 'a')\n"
        "fcntl.flock(f.fileno(), fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_run_in_use_refuses_a_second_train_resume_or_evaluate_in_one_line(
    finished, tmp_path, recipe, tiny
):
    run = copy_run(finished, tmp_path)
    holder = hold_lock(run)
    try:
        before = snapshot(run)
        for args in (
            ("train", "--resume", str(run)),
            ("evaluate", str(run)),
            ("train", str(recipe), "--run-dir", str(run), "--overwrite", *tiny),
        ):
            assert_one_line_error(run_cli(*args), "in use", str(run))
        report = run_cli("report", str(run))  # reads whole lines, writes atomically: safe
        assert report.returncode == 0, report.stderr[-3000:]
        after = {k: v for k, v in snapshot(run).items() if not k.startswith("report.")}
        assert after == before, "a refused command changed the run"
    finally:
        holder.kill()
        holder.wait()
    assert not lock_is_held(run), "a killed process left its lock behind"
    with RunDir(run).lock("test"):  # and the next process takes it
        assert lock_is_held(run)


# --- 2: a full disk or a file-size limit -------------------------------------------------


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """``ulimit -f`` for this process, with SIGXFSZ ignored so a write past it fails."""
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, handler)


def test_each_run_file_write_past_a_size_limit_is_one_line_and_keeps_the_whole_state(tmp_path):
    from safetensors.torch import save_file

    cfg = validate({"reward": [{"type": "vader"}]}, "test")
    run = RunDir.create(tmp_path / "run", cfg.to_yaml())
    run.append(METRICS, [{"step": 0, "loss": 1.0}])
    whole = (run.path / METRICS).read_text()
    write_atomic(run.path / EVAL, '{"ok": 1}')
    run.save_checkpoint(1, lambda f: (f / "trainer_state.json").write_text("{}"), keep=2)
    big = "x" * 400_000
    faults = {
        "metrics.jsonl": lambda: run.append(METRICS, [{"step": 1, "text": big}]),
        "eval.json": lambda: write_atomic(run.path / EVAL, big),
        "step-2": lambda: run.save_checkpoint(
            2, lambda f: torch.save({"w": torch.zeros(100_000)}, f / "optimizer.pt"), keep=2
        ),
        "final": lambda: run.save_final(
            lambda f: save_file({"w": torch.zeros(100_000)}, str(f / "w.safetensors"))
        ),
    }
    with file_size_limit(200_000):
        for name, write in faults.items():
            with pytest.raises(RewardtuneError) as caught:
                write()
            message = str(caught.value)
            assert name in message and "file-size limit" in message and "\n" not in message
    assert (run.path / METRICS).read_text() == whole, "half a line was left in metrics.jsonl"
    assert json.loads((run.path / EVAL).read_text()) == {"ok": 1}
    assert [p.name for p in run.checkpoints()] == ["step-1"]
    assert not run.final_dir.exists()
    leftovers = [p.name for p in run.path.rglob("*") if "tmp" in p.name]
    assert leftovers == [], "half-written files were left behind"
    run.append(METRICS, [{"step": 1, "loss": 0.5}])  # space again: the log goes on whole
    assert [r["step"] for r in run.read(METRICS)] == [0, 1]


def run_limited(nbytes: int, *args: str) -> subprocess.CompletedProcess:
    """`rewardtune ARGS` under ``ulimit -f`` (SIGXFSZ left at its default: the CLI's job)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return subprocess.run(
        [sys.executable, "-m", "rewardtune", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        cwd=ROOT,
        preexec_fn=limit,
    )


def test_a_size_limit_at_a_checkpoint_stops_in_one_line_and_a_resume_logs_each_step_once(
    finished, tmp_path
):
    run = copy_run(finished, tmp_path)
    # 20 kB: the logs fit, a checkpoint's optimizer.pt (~38 kB) does not
    limited = run_limited(20_000, "train", "--resume", str(run), "--set", "ppo.steps=4")
    assert_one_line_error(
        limited, "cannot write", "step-3", "file-size limit", f"train --resume {run}"
    )
    assert [p.name for p in RunDir(run).checkpoints()] == ["step-1", "step-2"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    resumed = run_cli("train", "--resume", str(run))  # ppo.steps=4 was recorded
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps_logged(run) == [0, 1, 2, 3]


def test_a_size_limit_while_writing_the_report_is_one_line_and_leaves_no_part(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    limited = run_limited(50_000, "report", str(run))
    assert_one_line_error(limited, "report.html", "file-size limit")
    assert not [p.name for p in run.iterdir() if p.name.startswith((".report", "report"))]
    assert run_cli("report", str(run)).returncode == 0


# --- 3: signals at any phase -------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_in_a_step_checkpoints_it_and_a_resume_logs_each_step_once(
    tmp_path, recipe, tiny_llama, prompts_file, sig
):
    run, counter = tmp_path / "run", tmp_path / "calls"
    overrides = set_args(tiny_overrides(tiny_llama, prompts_file, steps=4))
    env = {"RT_COUNTER": str(counter), "RT_SLOW_AT": "2", "RT_SLOW_S": "4"}
    proc = start_cli("train", str(recipe), "--run-dir", str(run), *overrides, env=env)
    wait_for(lambda: counter.exists() and counter.read_text() == "2")
    assert lock_is_held(run), "a training does not hold its run's lock"
    proc.send_signal(sig)  # during step 2's slow reward
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr[-3000:]
    assert f"Resume with:\n  rewardtune train --resume {run}" in stderr
    assert [p.name for p in RunDir(run).checkpoints()][-1] == "step-2"
    assert not lock_is_held(run)
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps_logged(run) == [0, 1, 2, 3]


def test_sigterm_while_loading_stops_at_once_and_writes_nothing(tmp_path, tiny):
    recipe = write_recipe(
        tmp_path / "slow.yaml",
        {"type": "python", "function": f"{HELPERS / 'slow_import_reward.py'}:reward"},
    )
    run, loading = tmp_path / "run", tmp_path / "loading"
    proc = start_cli(
        "train", str(recipe), "--run-dir", str(run), *tiny, env={"RT_LOADING": str(loading)}
    )
    wait_for(loading.exists)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted (SIGTERM): nothing was written yet" in stderr
    assert "Traceback" not in stderr and not run.exists()


def test_sighup_during_the_evaluation_keeps_the_run_and_a_resume_evaluates_it(
    tmp_path, tiny_llama, prompts_file
):
    recipe = write_recipe(
        tmp_path / "eval.yaml",
        {"type": "python", "function": f"{REWARDS}:length_reward"},
        eval_enabled=True,
    )
    run, counter = tmp_path / "run", tmp_path / "calls"
    overrides = set_args(tiny_overrides(tiny_llama, prompts_file, steps=2))
    env = {"RT_COUNTER": str(counter), "RT_SLOW_AT": "3", "RT_SLOW_S": "30"}  # 3: evaluation
    proc = start_cli("train", str(recipe), "--run-dir", str(run), *overrides, env=env)
    wait_for(lambda: counter.exists() and counter.read_text() == "3")
    proc.send_signal(signal.SIGHUP)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert f"interrupted (SIGHUP): step-2 is kept; go on with: rewardtune train --resume {run}" in (
        stderr
    )
    assert (run / "final").is_dir() and not (run / "eval.json").exists()
    resumed = run_cli("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (run / "eval.json").is_file() and (run / "report.html").is_file()
    assert steps_logged(run) == [0, 1]


# --- 4: overrides at resume --------------------------------------------------------------


def test_resume_applies_safe_overrides_records_them_and_eval_settings_reach_the_evaluation(
    finished, tmp_path
):
    run = copy_run(finished, tmp_path)
    safe = ["ppo.steps=3", "run.log_samples=1", "eval.enabled=true", "eval.prompts=1"]
    result = run_cli("train", "--resume", str(run), *set_args(safe))
    assert result.returncode == 0, result.stderr[-3000:]
    assert steps_logged(run) == [0, 1, 2]
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert sum(s["step"] == 2 for s in samples) == 1
    recorded = [json.loads(line) for line in (run / "overrides.jsonl").read_text().splitlines()]
    assert {(r["key"], r["value"], r["step"]) for r in recorded} == {
        ("ppo.steps", 3, 2),
        ("run.log_samples", 1, 2),
        ("eval.enabled", True, 2),
        ("eval.prompts", 1, 2),
    }
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["ppo"]["steps"] == 3 and config["eval"]["prompts"] == 1
    assert json.loads((run / "eval.json").read_text())["n_prompts"] == 1


@pytest.mark.parametrize(
    "override",
    [
        "ppo.seed=7",
        "model.name=gpt2",
        "ppo.batch_size=8",
        "reward.0.weight=2",
        "ppo.advantage=reinforce_pp",
    ],
)
def test_resume_refuses_an_override_that_makes_another_experiment(finished, override):
    before = snapshot(finished)
    result = run_cli("train", "--resume", str(finished), "--set", override)
    key = override.split("=")[0]
    assert_one_line_error(result, f"--set {key} at --resume", "another experiment")
    assert snapshot(finished) == before


# --- 5: reward backends that fail or lie -------------------------------------------------


class RewardServer:
    """A reward server on 127.0.0.1: ``mode`` decides each answer; ``calls`` counts them."""

    def __init__(self, mode: str = "ok"):
        self.mode, self.calls = mode, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.calls += 1
                server.answer(self, body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/score"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, handler, body: dict) -> None:
        scores = [len(r) / 10 for r in body["responses"]]
        mode = self.mode(self.calls) if callable(self.mode) else self.mode
        if mode == "ok":
            reply(handler, json.dumps({"scores": scores}).encode())
        elif mode == "odd":  # extra fields full of odd text are ignored
            note = "\u202eevil\u200b\x00 😀\r\n\ud800"
            reply(handler, json.dumps({"scores": scores, "note": note}).encode())
        elif mode == "not json":
            reply(handler, "<html>\x1b[31mproxy error\u202e</html>".encode())
        elif mode == "wrong length":
            reply(handler, json.dumps({"scores": scores + [1.0]}).encode())
        elif mode == "not numbers":
            reply(handler, json.dumps({"scores": ["high"] * len(scores)}).encode())
        elif mode == "no scores":
            reply(handler, b'{"score": 1}')
        elif mode == "404":
            reply(handler, b"no such route \x1b]8;;http://x\x07", 404)
        elif mode == "503":
            reply(handler, b"maintenance", 503)
        elif mode == "never answers":
            time.sleep(5)
        elif mode == "closes mid-response":
            handler.send_response(200)
            handler.send_header("Content-Length", "100")
            handler.end_headers()
            handler.wfile.write(b'{"scores": [0.')
            handler.wfile.flush()
            handler.connection.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(handler, body: bytes, status: int = 200) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


HTTP_FAULTS = {  # mode: (calls made with retries=2, what the one line says)
    "not json": (3, "the reply is not JSON"),
    "wrong length": (1, "returned 3 scores for 2 responses"),
    "not numbers": (1, "scores must be numbers"),
    "no scores": (1, 'not {"scores": [...]}'),
    "404": (1, "HTTP 404"),
    "503": (3, "HTTP 503"),
    "never answers": (3, "TimeoutError"),
    "closes mid-response": (3, "failed after 3 tries"),
}


@pytest.mark.parametrize("mode", list(HTTP_FAULTS))
def test_a_reward_server_that_fails_or_lies_is_retried_when_it_can_pass_then_one_line(mode):
    calls, expected = HTTP_FAULTS[mode]
    server = RewardServer(mode)
    spec = {"type": "http", "url": server.url, "timeout_s": 0.5, "retry_backoff_s": 0}
    reward = build_reward(validate({"reward": [spec]}, "test").reward)
    start = time.perf_counter()
    try:
        with pytest.raises(RewardtuneError) as caught:
            reward(["p", "q"], ["a", "b"])
    finally:
        server.close()
    message = str(caught.value)
    assert expected in message, message
    assert server.calls == calls, f"{server.calls} calls"
    assert "\n" not in message and not set(message) & set(UNSAFE), repr(message)
    assert time.perf_counter() - start < 5


PYTHON_FAULTS = {
    "raising_reward": ({"retries": 1}, "failed after 2 tries: ConnectionError"),
    "short_reward": ({}, "returned 1 scores for 2 responses"),
    "string_reward": ({}, "scores must be numbers"),
    "hanging_reward": ({"timeout_s": 0.3}, "TimeoutError"),
}


@pytest.mark.parametrize("function", list(PYTHON_FAULTS))
def test_a_python_reward_that_fails_lies_or_hangs_is_one_line(function):
    extra, expected = PYTHON_FAULTS[function]
    spec = {"type": "python", "function": f"{REWARDS}:{function}", **extra}
    reward = build_reward(validate({"reward": [spec]}, "test").reward)
    start = time.perf_counter()
    with pytest.raises(RewardtuneError, match=expected):
        reward(["p", "q"], ["a", "b"])
    assert time.perf_counter() - start < 3


def test_a_reward_server_that_goes_down_keeps_the_last_step_and_a_resume_finishes(
    tmp_path, tiny_llama, prompts_file
):
    server = RewardServer(lambda call: "503" if call == 4 else "ok")
    spec = {"type": "http", "url": server.url, "retries": 0, "timeout_s": 10}
    recipe = write_recipe(tmp_path / "http.yaml", spec)
    run = tmp_path / "run"
    overrides = set_args(tiny_overrides(tiny_llama, prompts_file, steps=4, **{"run.save_every": 2}))
    try:
        failed = run_cli("train", str(recipe), "--run-dir", str(run), *overrides)
        assert_one_line_error(
            failed, "HTTP 503", f"step-3 is kept; go on with: rewardtune train --resume {run}"
        )
        assert [p.name for p in RunDir(run).checkpoints()] == ["step-2", "step-3"]
        server.mode = "ok"  # the backend is fixed
        resumed = run_cli("train", "--resume", str(run))
    finally:
        server.close()
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "from step-3" in resumed.stderr
    assert steps_logged(run) == [0, 1, 2, 3]


# --- 6: odd text everywhere --------------------------------------------------------------

ODD = [
    "nul \x00 byte: the movie was great",
    "zero\u200bwidth\u200d joiner and \ufeff a bom: the food was cold",
    "bidi \u202eevil\u202c and \u2066isolate\u2069: what a lovely day",
    "emoji 😀👨‍👩‍👧 the driver in front of me",
    "crlf line\r\nends\r\n in a prompt",
    "lone \ud800 surrogate and \udfff another",
    "escape \x1b[31mred\x1b]8;;http://x\x07 text",
    "plain prompt about the park",
]


def test_printable_shows_controls_invisible_format_characters_and_surrogates_as_escapes():
    from rewardtune.text import printable

    assert printable("a\u202eb\u200bc\ud800d\x00e\r\nf\tg😀") == (
        "a\\u202eb\\u200bc\\ud800d\\x00e\nf\tg😀"
    )


def test_odd_text_in_prompts_columns_and_replies_trains_evaluates_and_reports_escaped(
    tmp_path, tiny_llama
):
    data = tmp_path / "odd.jsonl"
    rows = [{"text": t, "note": "\u202e\x00 😀 \ud800 \r\n"} for t in ODD * 2]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    server = RewardServer("odd")
    recipe = write_recipe(
        tmp_path / "odd.yaml", {"type": "http", "url": server.url}, eval_enabled=True
    )
    run = tmp_path / "run"
    extra = {"data.eval_fraction": 0.5, "eval.prompts": 8, "run.log_samples": 4}
    overrides = set_args(tiny_overrides(tiny_llama, data, steps=1, **extra))
    try:
        result = run_cli("train", str(recipe), "--run-dir", str(run), *overrides)
    finally:
        server.close()
    assert result.returncode == 0, result.stderr[-3000:]
    shown = {
        "console": result.stderr + result.stdout,
        "report.html": (run / "report.html").read_text(encoding="utf-8"),
        "report.md": (run / "report.md").read_text(encoding="utf-8"),
        "model card": (run / "final" / "README.md").read_text(encoding="utf-8"),
    }
    for where, text in shown.items():
        raw = sorted({hex(ord(c)) for c in text if c in UNSAFE})
        assert raw == [], f"{where} shows {raw} raw"
    assert "\\u202e" in shown["report.md"] and "😀" in shown["report.md"]
    for name in ("samples.jsonl", "eval.jsonl", "metrics.jsonl"):
        assert all(json.loads(line) for line in (run / name).read_text().splitlines())


# --- 7: a damaged run folder ------------------------------------------------------------


@pytest.fixture(scope="module")
def damaged(tmp_path_factory, finished, recipe, tiny_gpt2, prompts_file) -> dict[str, Path]:
    """Copies of the finished run, each damaged one way."""
    root = tmp_path_factory.mktemp("damaged")
    runs = {name: copy_run(finished, root, name) for name in ("config", "metrics", "final")}
    with (runs["config"] / "config.yaml").open("a") as f:
        f.write("model: [unclosed\n")
    lines = (runs["metrics"] / METRICS).read_text().splitlines(keepends=True)
    torn = [lines[0][:40] + "\n", '[1, 2]\n"foreign"\n', *lines]  # torn and foreign lines
    (runs["metrics"] / METRICS).write_text("".join(torn))
    shutil.rmtree(runs["final"] / "final")
    other = root / "gpt2-run"  # a checkpoint of another model put in its place
    overrides = set_args(tiny_overrides(tiny_gpt2, prompts_file, steps=1))
    result = run_cli("train", str(recipe), "--run-dir", str(other), *overrides)
    assert result.returncode == 0, result.stderr[-3000:]
    runs["checkpoint"] = copy_run(finished, root, "checkpoint")
    step = runs["checkpoint"] / "checkpoints" / "step-2"
    shutil.rmtree(step)
    shutil.copytree(other / "checkpoints" / "step-1", step)
    runs["finished"], runs["root"] = finished, root
    return runs


DAMAGE = {  # (damage, command): exit code, what stderr's last line (2) or stderr (0) names
    ("config", "train --resume RUN"): (2, "config.yaml"),
    ("config", "evaluate RUN"): (2, "config.yaml"),
    ("config", "report RUN"): (2, "config.yaml"),
    ("config", "generate RUN --prompt hi"): (2, "config.yaml"),
    ("config", "merge RUN OUT"): (2, "config.yaml"),
    ("config", "compare RUN FINISHED --out OUT"): (2, "config.yaml"),
    ("metrics", "train --resume RUN --set ppo.steps=3"): (0, "metrics.jsonl: skipped 3 line"),
    ("metrics", "report RUN"): (0, "metrics.jsonl: skipped 3 line"),
    ("metrics", "compare RUN FINISHED --out OUT"): (0, "metrics.jsonl: skipped 3 line"),
    ("final", "evaluate RUN"): (2, "final/"),
    ("final", "generate RUN --prompt hi"): (2, "final/"),
    ("final", "merge RUN OUT"): (2, "final/"),
    ("final", "report RUN"): (0, "report: "),
    ("final", "train --resume RUN"): (0, "resuming"),
    ("checkpoint", "train --resume RUN"): (2, "step-2"),
    ("checkpoint", "evaluate RUN --checkpoint step-2"): (2, "step-2"),
    ("checkpoint", "generate RUN/checkpoints/step-2 --prompt hi"): (2, "step-2"),
}


@pytest.mark.parametrize("case", list(DAMAGE), ids=" | ".join)
def test_a_damaged_run_folder_is_one_line_naming_the_file_or_carries_on_and_says_so(
    case, damaged, tmp_path
):
    (damage, command), (code, expected) = case, DAMAGE[case]
    run = copy_run(damaged[damage], tmp_path)
    args = (
        command.replace("RUN", str(run))
        .replace("FINISHED", str(damaged["finished"]))
        .replace("OUT", str(tmp_path / "out"))
        .split()
    )
    result = run_cli(*args)
    if code == 2:
        assert_one_line_error(result, expected)
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr and expected in result.stderr
    if damage == "metrics" and args[0] == "train":
        assert steps_logged(run) == [0, 1, 2]
