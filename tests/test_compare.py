"""`rewardtune compare`: curves overlaid, evaluations side by side, paired differences."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conftest import run_cli
from rewardtune.report.compare import write_compare
from test_report import EVAL_ROWS, _chromium, _run_chromium, make_run_dir


def _shift_after_rewards(run: Path, by: float) -> None:
    rows = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    for row in rows:
        row["scores_after"]["reward/total"] += by
    (run / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """Two synthetic evaluated runs; B's after rewards are A's + 0.1 on every prompt."""
    a = make_run_dir(tmp_path_factory.mktemp("a"))
    b = make_run_dir(tmp_path_factory.mktemp("b"))
    _shift_after_rewards(b, 0.1)
    return a, b


@pytest.fixture(scope="module")
def compared(runs, tmp_path_factory) -> tuple[Path, Path]:
    return write_compare(list(runs), tmp_path_factory.mktemp("out"))


def test_compare_html_is_self_contained_with_curves_and_both_evaluations(compared):
    html = compared[0].read_text()
    assert not re.search(r"https?://", html, flags=re.IGNORECASE)
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', html)
    assert not re.search(r"<(link|script)[^>]+src=", html)
    assert 'id="runs"' in html and 'id="evaluation"' in html
    for n in (1, 2):  # same folder names: told apart by position
        assert html.count(f">smollm2-detox-20240101-000000 ({n}): after</th>") == 1


def test_paired_difference_of_the_after_columns_matches_hand_computed_values(compared):
    md = compared[1].read_text().split("## Paired difference")[1]
    row = next(line for line in md.splitlines() if line.startswith("| reward/total |"))
    mean_a = sum(r[4] for r in EVAL_ROWS) / len(EVAL_ROWS)  # 0.25
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == [f"{mean_a:.4g}", f"{mean_a + 0.1:.4g}", "+0.1", "[+0.1, +0.1]", "improved"]
    tox = next(line for line in md.splitlines() if line.startswith("| toxicity |"))
    assert tox.endswith("| +0 | [+0, +0] | n.s. |")


def test_compare_refuses_runs_evaluated_with_another_seed_in_one_line(runs, tmp_path):
    other = make_run_dir(tmp_path)
    summary = json.loads((other / "eval.json").read_text())
    (other / "eval.json").write_text(json.dumps(summary | {"seed": 1}))
    result = run_cli("compare", str(runs[0]), str(other), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "seed 0 vs 1" in result.stderr
    assert not (tmp_path / "out" / "compare.html").exists()


def test_compare_of_an_unevaluated_run_says_so_instead_of_pairing(runs, tmp_path):
    bare = make_run_dir(tmp_path, evaluated=False)
    _, md = write_compare([runs[0], bare], tmp_path / "out")
    paired = md.read_text().split("## Paired difference")[1]
    assert "Not every run has been evaluated" in paired and "|" not in paired


def test_compare_command_on_two_trained_runs(two_runs, tmp_path):
    out = tmp_path / "cmp"
    result = run_cli("compare", *map(str, two_runs), "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    md = (out / "compare.md").read_text()
    assert "run-a" in md and "run-b" in md
    assert "## Paired difference" in md and "### run-b − run-a" in md
    assert re.search(r"^\| reward/total \| ", md, flags=re.M)


def test_compare_renders_in_a_real_browser(compared, tmp_path):
    binary = _chromium()
    url = compared[0].resolve().as_uri()
    dom = _run_chromium(binary, tmp_path / "profile", "--dump-dom", url).stdout
    assert 'id="evaluation"' in dom and "Paired difference" in dom
    shot = tmp_path / "shot.png"
    _run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", url)
    assert shot.is_file() and shot.stat().st_size > 10_000
