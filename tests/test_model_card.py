"""The Hub model card written into final/ and into a merged model's folder."""

from __future__ import annotations

import re

import yaml
from huggingface_hub import ModelCard

from conftest import run_cli
from rewardtune.report.model_card import base_license, base_model_id, is_hub_dataset


def _front_matter(text: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", text, flags=re.S)
    assert match, text[:200]
    return yaml.safe_load(match.group(1))


def _python_block(text: str) -> str:
    return re.search(r"```python\n(.*?)```", text, flags=re.S).group(1)


def test_final_gets_a_hub_model_card_with_the_evaluation_table(two_runs):
    text = (two_runs[0] / "final" / "README.md").read_text()
    meta = _front_matter(text)
    assert meta["library_name"] == "peft"
    assert {"rewardtune", "ppo", "rlhf", "lora"} <= set(meta["tags"])
    assert "base_model" not in meta  # a local folder is no hub id
    assert ModelCard.load(two_runs[0] / "final" / "README.md").data.library_name == "peft"
    assert "vader × 1.0" in text and "2 of 2" in text and "init_kl_coef 0.2" in text
    assert re.search(r"^\| metric \|", text, flags=re.M)  # the before/after table
    assert "`reward/total`" in text and "95% CI" in text
    assert "huggingface-cli upload" in text
    assert "rewardtune train THIS.yaml" in text and "learning_rate: 0.01" in text


def test_the_cards_loading_snippet_runs_as_written(two_runs, capsys):
    code = _python_block((two_runs[0] / "final" / "README.md").read_text())
    assert "PeftModel.from_pretrained" in code
    exec(compile(code, "model_card_snippet", "exec"), {})
    assert capsys.readouterr().out.startswith("My neighbour is")


def test_merge_output_gets_a_transformers_card_whose_snippet_runs(two_runs, tmp_path, capsys):
    out = tmp_path / "merged"
    result = run_cli("merge", str(two_runs[0]), str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    text = (out / "README.md").read_text()
    assert _front_matter(text)["library_name"] == "transformers"
    assert "merged into the base weights" in text
    code = _python_block(text)
    assert "peft" not in code
    exec(compile(code, "merged_card_snippet", "exec"), {})
    assert capsys.readouterr().out.startswith("My neighbour is")


def test_alias_hub_id_dataset_and_license_in_the_front_matter(tmp_path):
    assert base_model_id("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert base_license("smollm2-135m-instruct") == "apache-2.0"
    assert base_model_id("lvwerra/gpt2-imdb") == "lvwerra/gpt2-imdb"
    assert base_model_id(str(tmp_path)) is None
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n# a base\n")
    assert base_license(str(tmp_path)) == "mit"
    assert is_hub_dataset("knkarthick/dialogsum")
    assert not is_hub_dataset("detox") and not is_hub_dataset("prompts.jsonl")


def test_card_data_names_a_hub_data_set_and_the_library():
    from rewardtune.report.model_card import card_data

    config = {"data": {"source": "knkarthick/dialogsum"}, "reward": [{"type": "classifier"}]}
    info = {"base": "google/flan-t5-base", "seq2seq": True}
    data = card_data(config, info, adapter=True).to_dict()
    assert data["datasets"] == ["knkarthick/dialogsum"]
    assert data["library_name"] == "peft" and data["base_model"] == "google/flan-t5-base"
    assert data["pipeline_tag"] == "text2text-generation" and "reward-classifier" in data["tags"]
    full = card_data({"data": {"source": "detox"}}, info, adapter=False).to_dict()
    assert full["library_name"] == "transformers" and "datasets" not in full
