"""Evaluation beyond the held-out prompts as training saw them: the same prompts in the chat
template's form, and prompt sets training never saw, each a section of eval.json, the console
output and the report; the shipped forum prompt sets."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from conftest import CORPUS, policy_tokenizer, tiny_overrides
from rewardtune.config import load_config, validate
from rewardtune.data.prompts import load_prompts, read_prompt_set, shipped_prompt_sets
from rewardtune.evaluation.eval_sets import HELD_OUT, eval_sets
from rewardtune.types import RewardtuneError

UNSEEN = [
    "Reply to @tiny_model: that answer was",
    "One star. The parcel arrived",
    "Re: patch notes, the new map is",
    "Comment: the referee tonight was",
]


def _config(prompts_file: Path, **eval_keys):
    data = {"source": str(prompts_file), "eval_fraction": 0.2}
    return validate({"reward": [{"type": "vader"}], "data": data, "eval": eval_keys}, "test")


def _ids(prompts) -> list[list[int]]:
    return [p.input_ids.tolist() for p in prompts]


def test_chat_form_wraps_held_out_prompts_exactly_as_training_under_data_chat(prompts_file):
    tokenizer = policy_tokenizer()
    cfg = _config(prompts_file, forms=["plain", "chat"])
    plain, chat = eval_sets(cfg, tokenizer, 200, 5)
    assert (plain.name, plain.form, chat.name, chat.form) == (HELD_OUT, "plain", HELD_OUT, "chat")
    trained_plain = load_prompts(cfg.data, tokenizer, max_tokens=200)[1]
    chat_data = cfg.data.model_copy(update={"chat": True})
    trained_chat = load_prompts(chat_data, tokenizer, max_tokens=200)[1]
    assert _ids(plain.prompts) == _ids(trained_plain)
    assert _ids(chat.prompts) == _ids(trained_chat)
    assert _ids(chat.prompts) != _ids(plain.prompts)
    assert chat.prompts[0].input_ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert [p.text for p in chat.prompts] == [p.text for p in plain.prompts]


def test_without_forms_the_one_set_is_in_the_form_training_used(prompts_file):
    cfg = _config(prompts_file)
    chat_cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"chat": True})})
    assert [s.form for s in eval_sets(cfg, policy_tokenizer(), 200, 5)] == ["plain"]
    assert [s.form for s in eval_sets(chat_cfg, policy_tokenizer(), 200, 5)] == ["chat"]


def test_data_chat_both_trains_on_each_prompt_plain_then_wrapped_and_evaluates_both(
    prompts_file,
):
    tokenizer = policy_tokenizer()
    cfg = _config(prompts_file)
    both = cfg.model_copy(update={"data": cfg.data.model_copy(update={"chat": "both"})})
    plain_train, plain_held = load_prompts(cfg.data, tokenizer, max_tokens=200)
    chat_train, _ = load_prompts(
        cfg.data.model_copy(update={"chat": True}), tokenizer, max_tokens=200
    )
    train, held = load_prompts(both.data, tokenizer, max_tokens=200)
    assert _ids(train[0::2]) == _ids(plain_train) and _ids(train[1::2]) == _ids(chat_train)
    assert [p.text for p in train[1::2]] == [p.text for p in plain_train]
    assert _ids(held) == _ids(plain_held)  # held out: plain, and never trained on in any form
    sets = eval_sets(both, tokenizer, 200, 5)
    assert [s.form for s in sets] == ["plain", "chat"]
    assert _ids(sets[1].prompts) == _ids(
        eval_sets(
            cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"forms": ["chat"]})}),
            tokenizer,
            200,
            5,
        )[0].prompts
    )


def test_data_chat_both_stops_responses_at_the_chat_end_of_turn_too(tiny_llama, prompts_file):
    from rewardtune import PPOTrainer

    values = {"data.chat": "both", "ppo.steps": 1}
    trainer = PPOTrainer(load_config(None, tiny_overrides(tiny_llama, prompts_file, **values)))
    im_end = trainer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in trainer.eos_ids
    assert len(trainer.train_prompts) == 2 * len(
        load_prompts(trainer.config.data.model_copy(update={"chat": False}), trainer.tokenizer)[0]
    )


def test_chat_form_without_any_chat_template_is_one_clear_error(prompts_file):
    tokenizer = policy_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(RewardtuneError, match="eval.forms asks for chat but the tokenizer has no"):
        eval_sets(_config(prompts_file, forms=["plain", "chat"]), tokenizer, 200, 5)
    cfg = _config(prompts_file)
    cfg.data.chat = True
    with pytest.raises(RewardtuneError, match="data.chat is true but the tokenizer has no"):
        eval_sets(cfg, tokenizer, 200, 5)
    cfg = _config(prompts_file, forms=["chat"])
    cfg.data.chat_template = policy_tokenizer().chat_template  # data.chat_template serves
    start = eval_sets(cfg, tokenizer, 200, 5)[0].prompts[0].input_ids[0]
    assert start == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_an_extra_prompt_set_is_a_set_per_form_up_to_eval_prompts(prompts_file, tmp_path):
    extra = tmp_path / "unseen.txt"
    extra.write_text("\n".join(UNSEEN) + "\n\n")
    cfg = _config(prompts_file, forms=["plain", "chat"], prompt_sets=[str(extra)])
    sets = eval_sets(cfg, policy_tokenizer(), 200, 3)
    assert [(s.name, s.form, len(s.prompts)) for s in sets] == [
        (HELD_OUT, "plain", 2),
        (HELD_OUT, "chat", 2),
        (str(extra), "plain", 3),
        (str(extra), "chat", 3),
    ]
    assert [p.text for p in sets[3].prompts] == UNSEEN[:3]


def test_an_extra_set_holding_a_training_prompt_is_refused_naming_it(prompts_file, tmp_path):
    cfg = _config(prompts_file)
    train_text = load_prompts(cfg.data, policy_tokenizer())[0][0].text
    extra = tmp_path / "leaky.txt"
    extra.write_text(f"{UNSEEN[0]}\n{train_text}\n")
    cfg.eval.prompt_sets = [str(extra)]
    with pytest.raises(RewardtuneError) as info:
        eval_sets(cfg, policy_tokenizer(), 200, 3)
    message = str(info.value)
    assert message.startswith(f"eval.prompt_sets: {extra} holds a training prompt")
    assert repr(train_text) in message and "\n" not in message


def test_an_unknown_prompt_set_lists_the_shipped_ones(prompts_file):
    cfg = _config(prompts_file, prompt_sets=["detox-froum"])
    with pytest.raises(RewardtuneError, match="'detox-froum' is not a shipped prompt set"):
        eval_sets(cfg, policy_tokenizer(), 200, 3)


@pytest.mark.parametrize(("recipe", "extra"), [("smollm2-detox", "detox-forum"),
                                               ("smollm2-positive", "positive-forum")])  # fmt: skip
def test_the_shipped_recipes_evaluate_both_forms_and_their_unseen_forum_set(recipe, extra):
    sets = eval_sets(load_config(recipe), policy_tokenizer(), None, 66)
    assert [(s.name, s.form) for s in sets] == [
        (HELD_OUT, "plain"), (HELD_OUT, "chat"), (extra, "plain"), (extra, "chat"),
    ]  # fmt: skip
    assert all(len(s.prompts) == 66 for s in sets)


@pytest.mark.parametrize(("name", "trained"), [("detox-forum", "detox"),
                                               ("positive-forum", "positive")])  # fmt: skip
def test_forum_prompt_sets_are_110_new_unique_openings(name, trained):
    lines = read_prompt_set(name, "utf-8", "test")
    raw = shipped_prompt_sets()[name].read_text(encoding="utf-8").splitlines()
    assert lines == raw  # no blank or comment line: every line is a prompt
    assert len(set(lines)) == len(lines) >= 110
    assert not set(lines) & set(read_prompt_set(trained, "utf-8", "test"))
    assert all(line == line.strip() and not line.startswith("#") for line in lines)


@pytest.fixture(scope="module")
def sectioned_run(tmp_path_factory, tiny_llama, prompts_file):
    """A zero-step run evaluated on held-out prompts and an unseen file, plain and chat."""
    from rewardtune import PPOTrainer
    from rewardtune.evaluation.evaluate import evaluate_run
    from rewardtune.runs.rundir import RunDir

    root = tmp_path_factory.mktemp("sections")
    extra = root / "unseen.txt"
    extra.write_text("\n".join(UNSEEN) + "\n")
    assert not set(UNSEEN) & set(CORPUS)
    keys = {"eval.prompts": 3, "eval.samples_per_prompt": 1, "eval.forms": "[plain,chat]",
            "eval.prompt_sets": f"[{extra}]"}  # fmt: skip
    config = load_config(None, tiny_overrides(tiny_llama, prompts_file, steps=0, **keys))
    trainer = PPOTrainer(config, run_dir=RunDir.create(root / "run", config.to_yaml()))
    summary = evaluate_run(root / "run", trainer)
    return root / "run", summary, str(extra)


def test_each_extra_set_and_form_is_a_section_of_eval_json(sectioned_run):
    run, _, extra = sectioned_run
    data = json.loads((run / "eval.json").read_text())
    assert data["n_prompts"] == 2  # the held-out prompts in the first form: as before
    assert len((run / "eval.jsonl").read_text().splitlines()) == 2
    assert [(s["prompts"], s["form"], s["n_prompts"]) for s in data["sections"]] == [
        (HELD_OUT, "chat", 2),
        (extra, "plain", 3),
        (extra, "chat", 3),
    ]
    names = [m["name"] for m in data["metrics"]]
    for section in data["sections"]:
        assert [m["name"] for m in section["summary"]["metrics"]] == names
        assert section["summary"]["n_prompts"] == section["n_prompts"]
        assert "sections" not in section["summary"]
    rows = [json.loads(line) for line in (run / "eval_sections.jsonl").read_text().splitlines()]
    assert [(r["prompts"], r["form"]) for r in rows] == [(HELD_OUT, "chat")] * 2 + [
        (extra, "plain")
    ] * 3 + [(extra, "chat")] * 3
    assert [r["prompt"] for r in rows[2:5]] == UNSEEN[:3]


def test_the_console_prints_each_sections_table_under_its_heading(sectioned_run):
    from rich.console import Console

    from rewardtune.evaluation.console import print_summary

    _, summary, extra = sectioned_run
    out = io.StringIO()
    print_summary(summary, Console(file=out, width=200))
    text = out.getvalue()
    headings = [f"{HELD_OUT} · chat", f"{extra} · plain", f"{extra} · chat"]
    positions = [text.index(h) for h in headings]
    assert positions == sorted(positions) and text.index("2 held-out prompts") < positions[0]
    assert text.count("before vs after") == 4 and "3 prompts x 1 samples" in text


def test_the_report_shows_each_section_after_the_primary_table(sectioned_run):
    from rewardtune.report.report import write_report

    run, _, extra = sectioned_run
    html, md = (path.read_text() for path in write_report(run))
    for heading in (f"#### {HELD_OUT} · chat", f"#### {extra} · plain", f"#### {extra} · chat"):
        assert heading in md
    assert md.index("Diversity and KL") < md.index("Other prompt sets and forms")
    assert f"<h4>{HELD_OUT} · chat</h4>" in html and html.count('id="metrics"') == 1
