"""A data row's columns travel with its prompt (issue 21): through splitting, group sampling,
two processes, resume and evaluation, to python and http rewards; a column a reward needs but
a row lacks is one line and exit 2."""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import CORPUS, policy_tokenizer, run_cli, set_args, tiny_overrides
from rewardtune import PPOTrainer, load_config
from rewardtune.config import DataConfig
from rewardtune.data.columns import column_lists
from rewardtune.data.prompts import load_prompts, shipped_prompt_sets
from rewardtune.rewards import build_reward
from rewardtune.rewards.python import PythonReward
from rewardtune.types import RewardtuneError

HELPERS = Path(__file__).parent / "helpers"
ANSWERS = {text: f"answer {i}" for i, text in enumerate(sorted(set(CORPUS)))}


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    """The test corpus as jsonl: each prompt with an ``answer``, a ``key`` and a ``note``."""
    path = tmp_path_factory.mktemp("columns") / "rows.jsonl"
    rows = [
        {"text": text, "answer": answer, "key": i, "note": "n"}
        for i, (text, answer) in enumerate(ANSWERS.items())
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def assert_aligned(prompts: list[str], answers: list, keys: list | None = None) -> None:
    """Every prompt got its own row's fields (a prompt is its row's text, a prefix of it
    when the context cut it, or the text in the chat template)."""
    for i, (prompt, answer) in enumerate(zip(prompts, answers, strict=True)):
        row = next(text for text in ANSWERS if text in prompt or prompt.strip() in text)
        assert answer == ANSWERS[row], (prompt, answer)
        if keys is not None:
            assert keys[i] == sorted(ANSWERS).index(row)


def test_the_split_keeps_each_rows_columns_and_data_columns_selects_them(rows_file):
    tokenizer = policy_tokenizer()
    train, held = load_prompts(DataConfig(source=str(rows_file), eval_fraction=0.2), tokenizer)
    assert all(set(p.columns) == {"answer", "key", "note"} for p in train + held)
    assert_aligned([p.text for p in train + held], [p.columns["answer"] for p in train + held])
    chosen = DataConfig(source=str(rows_file), columns=["answer"], eval_fraction=0.2)
    assert all(set(p.columns) == {"answer"} for p in load_prompts(chosen, tokenizer)[0])
    typo = DataConfig(source=str(rows_file), columns=["answr"])
    with pytest.raises(RewardtuneError, match="data.columns: 'answr' is not a column of"):
        load_prompts(typo, tokenizer)
    lists = column_lists(train[:3])
    assert lists["answer"] == [p.columns["answer"] for p in train[:3]]


def test_shipped_sets_include_jsonl_files():
    folder = Path(__file__).parents[1] / "src" / "rewardtune" / "data" / "prompt_sets"
    names = {p.name.rsplit(".", 1)[0] for p in folder.iterdir() if p.suffix in (".txt", ".jsonl")}
    assert set(shipped_prompt_sets()) == names
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"data/prompt_sets/*.jsonl"' in pyproject


def test_python_rewards_take_columns_by_keyword(tmp_path):
    module = tmp_path / "r.py"
    module.write_text(
        "def exact(prompts, responses, *, answer):\n"
        "    return [float(r == a) for r, a in zip(responses, answer)]\n"
        "def anything(prompts, responses, **columns):\n"
        "    return [float(len(columns))] * len(responses)\n"
        "def old(prompts, responses):\n"
        "    return [1.0] * len(responses)\n"
    )
    columns = {"answer": ["a", "b"], "key": [1, 2]}
    exact = PythonReward(f"{module}:exact")
    assert exact.call == "columns" and exact(["p", "q"], ["a", "c"], columns) == [1.0, 0.0]
    assert PythonReward(f"{module}:anything")(["p", "q"], ["a", "c"], columns) == [2.0, 2.0]
    assert PythonReward(f"{module}:old").call == "prompts_responses"
    cfg = load_config(None, [f"reward=[{{type: python, function: '{module}:exact'}}]"])
    assert cfg.reward[0].needs_columns() == {"answer"}


def test_an_input_template_fills_in_the_row(tmp_path):
    module = tmp_path / "r.py"
    module.write_text("def seen(texts):\n    return [len(t) for t in texts]\n")
    template = "Q: {question} A: {response}"
    cfg = load_config(
        None, [f"reward=[{{type: python, function: '{module}:seen', input: '{template}'}}]"]
    )
    assert cfg.reward[0].needs_columns() == {"question"}
    reward = build_reward(cfg.reward)
    assert reward(["p"], ["yes"], {"question": ["why"]}) == [len("Q: why A: yes")]
    bad = "reward=[{type: vader, input: '{question}'}]"
    with pytest.raises(Exception, match=r"reward.0.input: .*\{response\}"):
        load_config(None, [bad])


class _Recorder:
    """A reward server on a free port that records each request's body and answers 0.5s."""

    def __init__(self):
        self.bodies: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                recorder.bodies.append(body)
                answer = json.dumps({"scores": [0.5] * len(body["responses"])}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/score"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def test_http_rewards_get_each_groups_columns_in_training(tmp_path, tiny_llama, rows_file):
    """Group sampling: each of the k samples of a prompt carries its row's fields, and the
    server gets them in the request body."""
    server = _Recorder()
    recipe = tmp_path / "http.yaml"
    recipe.write_text(yaml.safe_dump({"reward": [{"type": "http", "url": server.url}]}))
    overrides = tiny_overrides(
        tiny_llama,
        rows_file,
        steps=2,
        **{"ppo.samples_per_prompt": 2, "ppo.advantage": "rloo", "eval.enabled": False},
    )
    PPOTrainer(load_config(str(recipe), overrides)).train()
    server.httpd.shutdown()
    assert len(server.bodies) == 2
    for body in server.bodies:
        prompts, columns = body["prompts"], body["columns"]
        assert set(columns) == {"answer", "key", "note"}
        assert prompts[0::2] == prompts[1::2]  # groups of k = 2
        assert_aligned(prompts, columns["answer"], columns["key"])


@pytest.fixture(scope="module")
def column_recipe(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "columns.yaml"
    spec = {"type": "python", "function": f"{HELPERS / 'rewards.py'}:column_reward"}
    path.write_text(yaml.safe_dump({"reward": [spec], "eval": {"enabled": False}}))
    return path


def recorded(folder: Path, rank: str = "0") -> list[dict]:
    lines = (folder / f"columns-rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_python_rewards_get_columns_in_training_and_after_resume(
    tmp_path, tiny_llama, rows_file, column_recipe
):
    args = set_args(tiny_overrides(tiny_llama, rows_file, steps=4))
    env = {
        "RT_COLUMNS_DIR": str(tmp_path),
        "RT_COUNTER": str(tmp_path / "calls"),
        "RT_KILL_AT": "3",
    }
    run = tmp_path / "run"
    killed = run_cli("train", str(column_recipe), *args, "--run-dir", str(run), env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert len(recorded(tmp_path)) == 2
    resumed = run_cli("train", "--resume", str(run), env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    calls = recorded(tmp_path)
    assert len(calls) == 4  # steps 1, 2, then 3 and 4 after the resume
    for call in calls:
        assert_aligned(call["prompts"], call["answer"], call["key"])


def test_two_processes_each_get_their_shares_columns(
    tmp_path, tiny_llama, rows_file, column_recipe
):
    from test_distributed import accelerate_launch

    overrides = tiny_overrides(tiny_llama, rows_file, steps=2, **{"eval.enabled": False})
    result = accelerate_launch(
        "-m",
        "rewardtune",
        "train",
        str(column_recipe),
        *set_args(overrides),
        "--run-dir",
        "run",
        cwd=tmp_path,
        env={"RT_COLUMNS_DIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    shares = [recorded(tmp_path, rank) for rank in ("0", "1")]
    assert [len(s) for s in shares] == [2, 2]
    for step in range(2):
        first, second = shares[0][step], shares[1][step]
        assert len(first["prompts"]) == len(second["prompts"]) == 2  # half of batch_size 4
        assert set(first["prompts"]).isdisjoint(second["prompts"])
        for call in (first, second):
            assert_aligned(call["prompts"], call["answer"], call["key"])


def _bad_rows(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    rows = [{"text": "a question", "answer": "1"}, {"text": "another", "answer": "2"}]
    rows.append({"text": "no answer here"})
    rows += [{"text": f"question {i}", "answer": str(i)} for i in range(10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_column_a_reward_needs_but_a_row_lacks_is_one_line_and_exit_2(tmp_path, tiny_llama):
    data = _bad_rows(tmp_path)
    recipe = tmp_path / "match.yaml"
    recipe.write_text(yaml.safe_dump({"reward": [{"type": "match"}]}))
    args = set_args(tiny_overrides(tiny_llama, data, steps=1))
    result = run_cli("train", str(recipe), *args, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: data: row 3 of {data} has no column 'answer', which reward.0 (match) reads "
        "(columns: none); add it to that row, or remove the row"
    ]
    assert not (tmp_path / "run" / "checkpoints").exists()
    left_out = [*args, "--set", "data.columns=[text]"]
    result = run_cli("train", str(recipe), *left_out, "--run-dir", str(tmp_path / "run2"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: data.columns leaves out 'answer', which reward.0 (match) reads; add it to "
        "data.columns (or drop data.columns to keep every column)"
    ]


def test_a_bad_check_is_one_line_and_exit_2(tmp_path, tiny_llama, rows_file):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump({"reward": [{"type": "match", "extract": "regex:(a"}]}))
    args = set_args(tiny_overrides(tiny_llama, rows_file, steps=1))
    result = run_cli("train", str(recipe), *args, "--run-dir", str(tmp_path / "run"))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: recipe bad.yaml: reward.0.extract: 'regex:(a': not a regular")


def test_the_readme_example_with_a_column_runs_as_written(tmp_path, rows_file):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("<!-- columns-example -->")[1].split("```python")[1].split("```")[0]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)
    fn = namespace["exact_answer"]
    assert fn(["q1", "q2"], ["It is 42.", "no"], answer=["42", "7"]) == [1.0, 0.0]
    module = tmp_path / "my_rewards.py"
    module.write_text(block)
    assert PythonReward(f"{module}:exact_answer").call == "columns"
    del sys.modules["rewardtune_user_my_rewards"]
