"""The second bad-input and fault matrix, in process: legitimate text and files that crashed,
secrets that leaked, folders that were deleted, and faults of machines and reward servers."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from conftest import policy_tokenizer
from rewardtune.config import Config, DataConfig, validate
from rewardtune.data.prompts import load_prompts, read_rows
from rewardtune.rewards import build_reward
from rewardtune.rewards.base import call_with_retries
from rewardtune.rewards.python import PythonReward
from rewardtune.runs.rundir import RunDir, write_atomic
from rewardtune.types import RewardtuneError

REWARDS = Path(__file__).parent / "helpers" / "rewards.py"
TRICKY = [
    "[INST] hi [/INST]",
    "a [/] b",
    "[link=http://x]y[/link]",
    "\x1b[31mRED\x1b]8;;http://x\x07",
]


def config(**sections) -> Config:
    return validate({"reward": [{"type": "vader"}], **sections}, "test")


# --- 1: square brackets and escape sequences reach the terminal as text ----------------


def test_summary_prints_brackets_and_escapes_in_model_text_literally():
    from rich.console import Console

    from rewardtune.evaluation.console import print_summary
    from rewardtune.runs.eval_records import EvalRow, EvalSummary
    from test_report import _eval_summary

    rows = [
        EvalRow(p, b, a, {"reward/total": 0.0}, {"reward/total": 1.0}, kl=0.0, prompt_id=i)
        for i, (p, b, a) in enumerate(
            zip(TRICKY, TRICKY[1:] + TRICKY[:1], TRICKY[2:] + TRICKY[:2], strict=True)
        )
    ]
    data = _eval_summary()
    for side in ("before", "after"):  # the fields a fresh evaluation prints
        data["toxicity"][side] |= {"expected_max": 0.5, "probability": 0.5}
    summary = EvalSummary.from_dict(data)
    summary.rows = rows
    summary.metrics[0]["label"] = "Reward [/] [bold]x"
    out = io.StringIO()
    print_summary(summary, Console(file=out, force_terminal=True, width=400))
    text = out.getvalue()
    for literal in ("[INST] hi [/INST]", "a [/] b", "[link=http://x]y[/link]", "[/] [bold]x"):
        assert literal in text
    assert "\x1b]8;" not in text, "model text made a terminal hyperlink"
    assert "\x1b[31mRED" not in text and "\\x1b[31mRED" in text


# --- 2, 3: long prompts are cut from the left; files in other encodings ---------------


def test_long_prompts_are_cut_from_the_left_and_counted(tmp_path, caplog):
    source = tmp_path / "long.txt"
    long = "the movie was great " * 60 + "the end"
    source.write_text(long + "\n" + "\n".join(f"short {i}" for i in range(9)) + "\n")
    tok = policy_tokenizer()
    with caplog.at_level(logging.WARNING):
        train, held = load_prompts(DataConfig(source=str(source)), tok, max_tokens=20)
    prompts = train + held
    assert max(len(p.input_ids) for p in prompts) <= 20
    cut = [p for p in prompts if p.text.startswith("the movie") or p.text.endswith("the end")]
    assert len(cut) == 1 and cut[0].text.endswith("the end") and len(cut[0].text) < len(long)
    assert "cut 1 of 10 prompts" in caplog.text


def test_latin1_and_bom_files_read_with_data_encoding(tmp_path):
    latin = tmp_path / "p.txt"
    latin.write_bytes("café au lait\n".encode("latin-1"))
    assert read_rows(DataConfig(source=str(latin), encoding="latin-1")) == [
        {"text": "café au lait"}
    ]
    bom = tmp_path / "p.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "hi"}).encode() + b"\n")
    assert read_rows(DataConfig(source=str(bom))) == [{"text": "hi"}]


# --- 9: evaluation scorers pass the checks training rewards pass -----------------------


def test_extra_scorer_returning_the_wrong_count_is_a_reward_error():
    from rewardtune.evaluation.scoring import Scorers

    extra = [{"type": "python", "function": f"{REWARDS}:short_reward"}]
    cfg = config(eval={"extra_scorers": extra})
    with pytest.raises(RewardtuneError, match="returned 1 scores for 2 responses"):
        Scorers.build(cfg.reward, cfg.eval).score(["a", "b"], ["c", "d"])


# --- 12: --overwrite replaces only a rewardtune run ------------------------------------


def test_overwrite_refuses_the_current_folder_and_keeps_its_files(tmp_path, monkeypatch):
    (tmp_path / "thesis.tex").write_text("mine")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RewardtuneError, match="not a rewardtune run"):
        RunDir.create(Path("."), config().to_yaml(), overwrite=True)
    assert (tmp_path / "thesis.tex").read_text() == "mine"


def test_overwrite_replaces_a_rewardtune_run(tmp_path):
    run = RunDir.create(tmp_path / "run", config().to_yaml())
    (run.path / "metrics.jsonl").write_text("{}\n")
    RunDir.create(run.path, config().to_yaml(), overwrite=True)
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml"]


# --- 13, 19: http rewards: secrets by environment, redacted files, whole-call timeout ---


class _Server:
    """A reward server on a free port; ``behaviour(handler)`` answers each POST."""

    def __init__(self, behaviour):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                seen.append(dict(self.headers))
                self.rfile.read(int(self.headers["Content-Length"]))
                behaviour(self, len(seen))

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/score"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def _answer(handler, body: bytes, status: int = 200) -> None:
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_http_headers_fill_env_at_call_time_and_are_never_stored(monkeypatch):
    server = _Server(lambda h, n: _answer(h, b'{"scores": [0.5]}'))
    monkeypatch.setenv("RM_TOKEN", "s3cret")
    spec = {"type": "http", "url": server.url, "headers": {"Authorization": "Bearer ${RM_TOKEN}"}}
    reward = build_reward(config(reward=[spec]).reward)
    assert reward(["p"], ["r"]) == [0.5]
    assert server.seen[0]["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in repr(vars(reward.terms[0][0]))
    monkeypatch.delenv("RM_TOKEN")
    with pytest.raises(RewardtuneError, match="RM_TOKEN is not set"):
        build_reward(config(reward=[spec]).reward)


def test_secrets_in_http_urls_and_headers_never_reach_config_or_report(tmp_path):
    from rewardtune.report.report import write_report

    spec = {
        "type": "http",
        "url": "https://bob:hunter2@rm.example/score?token=abc123&model=${RM_MODEL}",
        "headers": {"X-Key": "literal-key-42", "Authorization": "Bearer ${RM_TOKEN}"},
    }
    cfg = config(reward=[spec], eval={"extra_scorers": [spec]})
    run = RunDir.create(tmp_path / "run", cfg.to_yaml())
    html, md = write_report(run.path)
    for path in (run.config_file, html, md):
        text = path.read_text()
        for secret in ("hunter2", "abc123", "literal-key-42"):
            assert secret not in text, f"{secret} in {path.name}"
    assert "${RM_TOKEN}" in run.config_file.read_text()
    with pytest.raises(RewardtuneError, match="REDACTED"):  # resuming needs the secret again
        build_reward(validate(json.loads(json.dumps(cfg.public_dump())), "x").reward)


def test_http_timeout_bounds_the_whole_call_of_a_trickling_server():
    def trickle(handler, n):
        handler.send_response(200)
        handler.send_header("Content-Length", "40")
        handler.end_headers()
        for _ in range(40):
            handler.wfile.write(b" ")
            handler.wfile.flush()
            time.sleep(0.1)

    server = _Server(trickle)
    spec = {"type": "http", "url": server.url, "timeout_s": 0.5, "retries": 0}
    reward = build_reward(config(reward=[spec]).reward)
    start = time.perf_counter()
    with pytest.raises(RewardtuneError, match="TimeoutError"):
        reward(["p"], ["r"])
    assert time.perf_counter() - start < 2.0


def test_http_retries_twice_by_default_with_exponential_backoff(monkeypatch):
    import rewardtune.rewards.base as base

    server = _Server(lambda h, n: _answer(h, b"busy", 503) if n < 3 else _answer(h, b"[1.0]"))
    waits = []
    monkeypatch.setattr(base, "_sleep", waits.append)
    spec = {"type": "http", "url": server.url, "retry_backoff_s": 0.25}
    assert build_reward(config(reward=[spec]).reward)(["p"], ["r"]) == [1.0]
    assert waits == [0.25, 0.5] and len(server.seen) == 3


# --- 14: report.md keeps model text inert ----------------------------------------------


def test_markdown_report_escapes_links_images_and_html_in_model_text(tmp_path):
    from rewardtune.report.report import write_report
    from test_report import make_run_dir

    run = make_run_dir(tmp_path)
    rows = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    rows[0]["after"] = "see [here](http://evil.example) ![x](https://evil.example/p.png) <b>hi</b>"
    (run / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = write_report(run)[1].read_text()
    assert "see \\[here\\]" in md
    for live in ("[here](", "![x]", "<b>", "http://evil", "https://evil"):
        assert live not in md


# --- 17, 18: checkpoints never hold NaN; leftovers never block a save -------------------


def test_nan_weights_are_never_written_and_the_last_good_checkpoint_stays(tmp_path, tiny_llama):
    from rewardtune.config import ModelConfig
    from rewardtune.models import load_policy
    from rewardtune.runs import checkpoints

    policy = load_policy(ModelConfig(name=str(tiny_llama)), "cpu")
    run = RunDir.create(tmp_path / "run", config().to_yaml())

    def write(step):
        state = policy.module.state_dict()
        return lambda folder: checkpoints.write_checkpoint(
            folder, policy, state, {}, checkpoints.TrainerState(step, 0.2)
        )

    run.save_checkpoint(1, write(1), keep=2)
    lora = next(p for n, p in policy.module.named_parameters() if "lora_B" in n)
    with torch.no_grad():
        lora[0, 0] = float("nan")
    with pytest.raises(RewardtuneError, match="became NaN/Inf"):
        run.save_checkpoint(2, write(2), keep=2)
    assert [p.name for p in run.checkpoints()] == ["step-1"]
    with pytest.raises(RewardtuneError, match="became NaN/Inf"):
        run.save_final(lambda folder: checkpoints.write_final(folder, policy))
    assert not run.final_dir.exists()


def test_a_stale_final_old_from_a_crash_never_blocks_the_next_save(tmp_path):
    run = RunDir.create(tmp_path / "run", config().to_yaml())
    run.save_final(lambda folder: (folder / "w").write_text("1"))
    (run.path / ".final.old").mkdir()
    (run.path / ".final.old" / "w").write_text("0")  # a kill between the two renames
    run.save_final(lambda folder: (folder / "w").write_text("2"))
    assert (run.final_dir / "w").read_text() == "2"
    assert not (run.path / ".final.old").exists()


def test_write_atomic_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    import rewardtune.runs.rundir as rundir

    synced = []
    monkeypatch.setattr(rundir, "fsync_dir", synced.append)
    write_atomic(tmp_path / "eval.json", "{}")
    assert synced == [tmp_path]


# --- 20: python rewards: explicit call, sys.modules, SystemExit ------------------------

REWARD_FILE = """
from __future__ import annotations

import pickle
import sys
from dataclasses import dataclass


@dataclass
class Score:
    value: float


def lengths(texts, lowercase=True):
    return [float(len(t)) for t in texts]


def pickled(prompts, responses):
    return [pickle.loads(pickle.dumps(Score(2.0))).value for _ in responses]


def exits(prompts, responses):
    sys.exit(0)
"""


@pytest.fixture
def reward_file(tmp_path) -> Path:
    path = tmp_path / "my_rewards.py"
    path.write_text(REWARD_FILE)
    return path


def test_a_default_argument_does_not_make_texts_into_prompts(reward_file):
    assert PythonReward(f"{reward_file}:lengths")(["ab"], ["c"]) == [3.0]
    assert PythonReward(f"{reward_file}:lengths", call="responses")(["ab"], ["c"]) == [1.0]
    assert PythonReward(f"{reward_file}:lengths", input="response")(["ab"], ["c"]) == [1.0]


def test_dataclasses_and_pickle_work_inside_a_reward_file(reward_file):
    assert PythonReward(f"{reward_file}:pickled")(["a"], ["b"]) == [2.0]


def test_sys_exit_inside_a_reward_is_a_reward_error(reward_file):
    reward = PythonReward(f"{reward_file}:exits")
    with pytest.raises(RewardtuneError, match="reward 'exits' failed: SystemExit"):
        call_with_retries(reward, ["a"], ["b"], retries=0)


def test_generate_streams_escape_sequences_of_model_text_as_text():
    from rewardtune.inference import _streamer

    out = io.StringIO()
    _streamer(policy_tokenizer(), out).on_finalized_text("[/] \x1b]8;;http://x\x07y\x1b[31m", True)
    assert out.getvalue() == "[/] \\x1b]8;;http://x\\x07y\\x1b[31m\n"
