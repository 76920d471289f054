"""report.py: a self-contained HTML report and a Markdown twin from a run directory."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape
from importlib import resources
from pathlib import Path

import pytest
import yaml

from rewardtune.report.report import write_report

SCRIPT_PROMPT = 'Tell me about <script>alert("x")</script> & friends'
# (prompt, before, after, reward before, reward after): reward changes +0.6, -0.3, +0.1, ...
EVAL_ROWS = [
    ("The movie was", "awful trash, damn it", "a quiet, lovely film", -0.4, 0.2),
    (SCRIPT_PROMPT, "they are fine", "they are idiots", 0.5, 0.2),
    ("My neighbour is", "loud and annoying", "loud but friendly", 0.1, 0.2),
    ("The food tasted", "like garbage", "fresh and warm", -0.2, 0.7),
    ("Summarize: person one said hello", "hello", "they greeted", 0.3, 0.3),
    ("The driver in front of me", "was a moron", "was slow", -0.5, -0.1),
]


def _config() -> dict:
    return {
        "recipe": "smollm2-detox",
        "model": {"name": "smollm2-135m-instruct", "lora": {"r": 16, "alpha": 16}},
        "reward": [
            {"type": "profanity", "output": "prob", "weight": 1.0},
            {"type": "http", "url": "http://127.0.0.1:8000/score", "weight": 0.5},
        ],
        "ppo": {"steps": 20, "batch_size": 16, "learning_rate": 1.41e-5, "init_kl_coef": 0.2},
    }


def _metrics_row(step: int) -> dict:
    return {
        "step": step,
        "env/reward_mean": -0.3 + 0.08 * step,
        "env/reward_std": 0.4 - 0.01 * step,
        "objective/kl": 0.05 * step,
        "objective/kl_coef": 0.2 - 0.002 * step,
        "ppo/loss/policy": -0.01 + 0.001 * step,
        "ppo/loss/value": 0.5 / (step + 1),
        "ppo/policy/clipfrac": 0.02 * (step % 4),
        "throughput/samples_per_s": 10.0 + 0.2 * step,
        "throughput/tokens_per_s": 320.0 + 5 * step,
        "time/rollout": 1.1,
        "time/reward": 0.2,
        "time/update": 0.6,
    }


def _eval_summary() -> dict:
    def metric(name, label, better, before, after, ci, includes_zero):
        return {
            "name": name, "label": label, "higher_is_better": better,
            "before": {"mean": before, "median": before, "std": 0.2},
            "after": {"mean": after, "median": after, "std": 0.1},
            "diff": after - before, "ci": ci, "ci_includes_zero": includes_zero,
        }  # fmt: skip

    return {
        "checkpoint": "final", "n_prompts": 6, "seed": 0, "max_new_tokens": 24, "bootstrap": 1000,
        "metrics": [
            metric("reward/total", "Reward (total)", True, -0.03, 0.25, [0.05, 0.5], False),
            metric("toxicity", "Toxicity P(toxic)", False, 0.4, 0.15, [-0.4, -0.1], False),
            metric("perplexity", "Perplexity", False, 20.0, 26.0, [2.0, 9.0], False),
            metric("length", "Response length (tokens)", None, 12.0, 11.5, [-1.5, 0.6], True),
        ],
        "toxicity": {
            "scorer": "profanity",
            "before": {"mean": 0.4, "std": 0.3, "flagged_rate": 0.5},
            "after": {"mean": 0.15, "std": 0.1, "flagged_rate": 0.17},
            "improvement_mean": 0.625, "improvement_std": 0.667,
        },
        "diversity": {
            "before": {"distinct-1": 0.8, "distinct-2": 0.95, "distinct-3": 0.99},
            "after": {"distinct-1": 0.75, "distinct-2": 0.92, "distinct-3": 0.98},
        },
        "kl": {"mean": 1.2, "ci": [0.9, 1.5]},
    }  # fmt: skip


def _eval_row(prompt, before, after, reward_before, reward_after) -> dict:
    tox_before, tox_after = 0.1 + max(0.0, -reward_before), 0.1 + max(0.0, -reward_after)
    return {
        "prompt": prompt, "before": before, "after": after,
        "scores_before": {"reward/total": reward_before, "toxicity": tox_before},
        "scores_after": {"reward/total": reward_after, "toxicity": tox_after},
    }  # fmt: skip


def _write_jsonl(path: Path, rows: list[dict], torn_tail: bool = False) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows)
    path.write_text(text + ('{"step": 99, "env/rew' if torn_tail else ""))


def make_run_dir(root: Path, evaluated: bool = True) -> Path:
    run = root / "smollm2-detox-20240101-000000"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(_config()))
    _write_jsonl(run / "metrics.jsonl", [_metrics_row(s) for s in range(10)], torn_tail=True)
    if not evaluated:
        return run
    samples = [{"step": s, "prompt": f"prompt {s}", "response": f"reply {s}", "reward": 0.1 * s}
               for s in range(10)]  # fmt: skip
    _write_jsonl(run / "samples.jsonl", samples)
    run_info = {
        "wall_time_s": 754.2, "model": "smollm2-135m-instruct", "steps_done": 10,
        "parameters": {"trainable_lm": 1_843_200, "value_head": 577, "total": 136_358_017},
    }  # fmt: skip
    (run / "run_info.json").write_text(json.dumps(run_info))
    (run / "eval.json").write_text(json.dumps(_eval_summary()))
    _write_jsonl(run / "eval.jsonl", [_eval_row(*row) for row in EVAL_ROWS])
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One evaluated run's (report.html, report.md); drawing the plots takes a few seconds."""
    return write_report(make_run_dir(tmp_path_factory.mktemp("run")))


def test_report_writes_html_and_markdown_into_the_run_dir(tmp_path: Path):
    run = make_run_dir(tmp_path)
    html_path, md_path = write_report(str(run))
    assert html_path == run / "report.html" and html_path.is_file()
    assert md_path == run / "report.md" and md_path.is_file()


def test_html_is_self_contained(report):
    html = report[0].read_text()
    assert not re.search(r"https?://", html, flags=re.IGNORECASE)
    assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}"', html)
    assert "<style>" in html and "<script>" in html
    assert not re.search(r"<(link|script)[^>]+src=", html)


def test_html_inlines_the_shipped_css_and_js_assets(report):
    """The page's style and script are the package's report/assets files, verbatim."""
    html = report[0].read_text()
    assets = resources.files("rewardtune.report") / "assets"
    css, js = (assets / "report.css").read_text(), (assets / "report.js").read_text()
    assert "th[aria-sort" in css and "function sortBy" in js
    assert f"<style>\n{css}</style>" in html
    assert f"<script>\n{js}</script>" in html


def test_html_has_metrics_and_samples_tables(report):
    html = report[0].read_text()
    assert 'id="metrics"' in html and 'id="samples"' in html
    assert html.count('class="sample-row"') == len(EVAL_ROWS)
    assert "n.s." in html  # the length metric's CI includes zero
    assert re.search(r'class="better[^"]*"[^>]*>\+0\.28<', html)  # reward went up: green
    assert re.search(r'class="worse[^"]*"[^>]*>\+6<', html)  # perplexity went up: red
    assert "62.5%" in html  # toxicity improvement (before - after) / before


def test_sample_rows_are_sorted_by_reward_change_descending(report):
    html = report[0].read_text()
    samples = html[html.index('id="samples"') :]
    prompts = [row[0] for row in EVAL_ROWS]
    positions = [samples.index(_escaped(p)) for p in prompts]
    changes = [row[4] - row[3] for row in EVAL_ROWS]
    by_position = [change for _, change in sorted(zip(positions, changes, strict=True))]
    assert by_position == sorted(changes, reverse=True)


def _escaped(text: str) -> str:
    for raw, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;")):
        text = text.replace(raw, entity)
    return text


def test_user_text_is_escaped(report):
    html = report[0].read_text()
    assert SCRIPT_PROMPT not in html
    assert "<script>alert" not in html
    assert _escaped(SCRIPT_PROMPT) in html
    assert html.count("<script>") == 1  # only the report's own inline script


def test_markdown_has_the_metrics_table(report):
    md = report[1].read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert any(re.fullmatch(r"\|\s*metric\s*\|.*", line) for line in table)
    for name in ("reward/total", "toxicity", "perplexity", "length"):
        assert any(f"`{name}`" in line for line in table), name
    assert "<script>alert" not in md
    assert "Plot omitted" in md


def test_an_eval_json_written_before_sections_renders_without_them(report):
    assert "sections" not in _eval_summary()  # the fixture is an older eval.json
    md = report[1].read_text()
    assert "6 held-out prompts × 1 samples" in md and "Diversity and KL" in md
    assert "Other prompt sets and forms" not in md and " · " not in md


def test_sections_render_under_their_headings_after_the_primary_tables(tmp_path: Path):
    run = make_run_dir(tmp_path)
    section = {"prompts": "detox-forum", "form": "chat", "n_prompts": 5}
    section["summary"] = _eval_summary() | {"n_prompts": 5, "samples_per_prompt": 4}
    (run / "eval.json").write_text(json.dumps(_eval_summary() | {"sections": [section]}))
    md = write_report(run)[1].read_text()
    position = md.index("#### detox-forum · chat\n\n5 prompts × 4 samples.")
    assert md.index("Diversity and KL") < position < md.index("## Side by side")
    assert md.count("| Toxicity P(toxic) (`toxicity`) |") == 2


def test_summary_reports_steps_wall_time_and_parameters(report):
    md = report[1].read_text()
    assert "10 done of 20 configured" in md
    assert "12m 34s" in md
    assert "1.84M (1.35% of 136.36M total)" in md
    assert "577 (0.000423% of 136.36M total)" in md
    assert "profanity × 1.0" in md


def test_report_without_evaluation_says_so(tmp_path: Path):
    html_path, md_path = write_report(make_run_dir(tmp_path, evaluated=False))
    html, md = html_path.read_text(), md_path.read_text()
    for text in (html, md):
        assert "Not evaluated yet" in text
        assert "unknown (no run_info.json)" in text
    assert 'id="metrics"' not in html and "sample-row" not in html
    assert "data:image/png;base64," in html  # the training curves are still drawn
    assert not re.search(r"https?://", html)


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    return found


def _run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1280,1600", "--virtual-time-budget=2000",
    ]  # fmt: skip
    return subprocess.run(
        [binary, *flags, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_report_renders_in_a_real_browser(report, tmp_path: Path):
    import matplotlib.image

    binary = _chromium()
    url = report[0].resolve().as_uri()
    shot = tmp_path / "shot.png"
    _run_chromium(binary, tmp_path / "profile-shot", f"--screenshot={shot}", url)
    assert shot.is_file() and shot.stat().st_size > 10_000
    assert matplotlib.image.imread(shot).std() > 0.01

    dom = _run_chromium(binary, tmp_path / "profile-dom", "--dump-dom", url).stdout
    assert 'id="metrics"' in dom
    assert 'class="sample-row"' in dom


CLICK_AND_FILTER = """<script>
document.getElementById("samples").tHead.rows[0].cells[3].click();
var input = document.querySelector("input.filter");
input.value = "MOVIE";
input.dispatchEvent(new Event("input"));
</script></body>"""


def test_sample_table_sorts_and_filters_in_a_real_browser(report, tmp_path: Path):
    binary = _chromium()
    page = tmp_path / "clicked.html"
    page.write_text(report[0].read_text().replace("</body>", CLICK_AND_FILTER))
    dom = _run_chromium(binary, tmp_path / "profile", "--dump-dom", page.as_uri()).stdout
    rows = re.findall(r'<tr class="sample-row"( hidden="")?><td class="text">([^<]*)<', dom)
    by_reward_before = sorted(EVAL_ROWS, key=lambda row: row[3])
    assert [unescape(prompt) for _, prompt in rows] == [row[0] for row in by_reward_before]
    assert [prompt for hidden, prompt in rows if not hidden] == ["The movie was"]
    assert "1 of 6 rows" in dom


def test_report_names_the_estimator_and_the_per_prompt_toxicity_with_cis(tmp_path: Path):
    run = make_run_dir(tmp_path)
    config = _config()
    config["ppo"] |= {"advantage": "grpo", "samples_per_prompt": 4, "kl_in": "loss"}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    summary = _eval_summary() | {"samples_per_prompt": 4}
    for side, worst, share in (("before", 0.61, 0.5), ("after", 0.22, 0.0)):
        summary["toxicity"][side] |= {
            "expected_max": worst,
            "expected_max_ci": [worst - 0.1, worst + 0.1],
            "probability": share,
            "probability_ci": [max(share - 0.2, 0.0), share + 0.2],
        }
    (run / "eval.json").write_text(json.dumps(summary))
    md = write_report(run)[1].read_text()
    assert "GRPO, group-normalised (Shao et al. 2024); 4 sample(s) per prompt; KL in the loss" in md
    assert "expected max toxicity (per prompt) | 0.61 [0.51, 0.71] | 0.22 [0.12, 0.32]" in md
    assert "toxicity probability (a sample ≥ 0.5) | 0.5 [0.3, 0.7] | 0 [0, 0.2]" in md
    assert "6 held-out prompts × 4 samples" in md
