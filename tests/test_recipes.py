"""The three original workflows as recipes, each run one PPO step on local stand-ins of the
same architecture (hub names replaced with --set)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import SHARED_DATA, run_cli, set_args
from rewardtune import PPOTrainer, load_config
from rewardtune.config import shipped_recipes
from test_cli import STAT_NAMES

DIALOGSUM = SHARED_DATA / "dialogsum" / "dialogsum.dev.jsonl"
LINES = [
    "#Person1#: Hello, how are you doing today? #Person2#: Not bad, the bus was late again.",
    "#Person1#: Did you finish the report? #Person2#: Almost, I need another hour or so.",
    "#Person1#: The food here is cold and the waiter is rude. #Person2#: Let's complain then.",
]


@pytest.fixture(scope="module")
def imdb_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("imdb") / "imdb.jsonl"
    reviews = [
        (
            "This movie was a slow burn, but the acting carried it through to a moving final act. "
            * 3,
            1,
        ),
        (
            "I hated every minute of this film, the plot made no sense and the dialogue was wooden. "
            * 3,
            0,
        ),
        ("Short review.", 1),  # filtered out: not longer than 200 characters
    ] * 6
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in reviews))
    return path


@pytest.fixture(scope="module")
def dialogsum_file(tmp_path_factory) -> Path:
    """A local file shaped like knkarthick/dialogsum (id, dialogue, summary, topic)."""
    path = tmp_path_factory.mktemp("dialogsum") / "dialogsum.jsonl"
    rows = [
        {
            "id": f"train_{i}",
            "dialogue": " ".join(LINES[i % 3 :] + LINES[: i % 3]) * 2,
            "summary": "They talk.",
            "topic": "chat",
        }
        for i in range(12)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_every_shipped_recipe_loads_and_validates():
    names = set(shipped_recipes())
    assert {
        "smollm2-detox",
        "smollm2-positive",
        "gpt2-imdb-sentiment",
        "flan-t5-dialogsum-detox",
        "tinyllama-dialogsum-detox-qlora",
    } <= names
    for name in names:
        cfg = load_config(name)
        assert cfg.reward and cfg.ppo.batch_size % cfg.ppo.mini_batch_size == 0


def recipe_overrides(name: str, model: Path, data: Path, classifier: Path) -> dict:
    small = {
        "ppo.batch_size": 4,
        "ppo.mini_batch_size": 2,
        "ppo.steps": 1,
        "data.eval_fraction": 0.25,
        "eval.prompts": 2,
        "eval.max_new_tokens": 8,
        "eval.bootstrap": 100,
        "model.name": str(model),
        "data.source": str(data),
        "reward.0.model": str(classifier),
    }
    if name == "gpt2-imdb-sentiment":
        small |= {"eval.enabled": "false"}
    else:
        small |= {"eval.toxicity.model": str(classifier), "data.max_chars": 2000}
    if name.startswith("tinyllama"):
        small |= {"model.quantization": "none", "generation.response_tokens": "[10,30]"}
    return small


def check_step_stats(stats: dict) -> None:
    for name in STAT_NAMES:
        assert name in stats, name
    assert math.isfinite(stats["ppo/loss/policy"]) and math.isfinite(stats["ppo/loss/value"])


def one_step_in_process(name: str, overrides: dict):
    """One step through the Python API; returns (trainer, params before, ref params before)."""
    cfg = load_config(name, [f"{k}={v}" for k, v in overrides.items()])
    trainer = PPOTrainer(cfg)
    policy = trainer.policy
    trainable = {
        n: p.detach().clone() for n, p in policy.module.named_parameters() if p.requires_grad
    }
    ref_lm = policy.ref_lm if policy.ref_lm is not None else policy.module.lm
    frozen = {n: p.detach().clone() for n, p in ref_lm.named_parameters() if not p.requires_grad}
    history = trainer.train()
    check_step_stats(history[0])
    changed = [
        n
        for n, p in policy.module.named_parameters()
        if p.requires_grad and not torch.equal(p, trainable[n])
    ]
    assert changed, "no trainable parameter changed"
    for n, p in ref_lm.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen reference parameter {n} changed"
    return trainer


def test_gpt2_imdb_sentiment_full_fine_tuning_with_frozen_reference(
    tiny_gpt2, sentiment_classifier, imdb_file, tmp_path
):
    overrides = recipe_overrides("gpt2-imdb-sentiment", tiny_gpt2, imdb_file, sentiment_classifier)
    trainer = one_step_in_process("gpt2-imdb-sentiment", overrides)
    assert trainer.policy.ref_lm is not None and not trainer.policy.module.has_adapter
    lengths = [len(p.input_ids) for p in trainer.train_prompts]
    assert min(lengths) >= 2 and max(lengths) <= 8, "queries are the first 2-8 tokens"
    assert len(trainer.train_prompts) + len(trainer.eval_prompts) == 12, (
        "reviews <= 200 chars dropped"
    )
    run = tmp_path / "run"
    result = run_cli(
        "train",
        "gpt2-imdb-sentiment",
        "--run-dir",
        str(run),
        *set_args([f"{k}={v}" for k, v in overrides.items()]),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    trained = load_file(run / "final" / "model.safetensors")
    base = load_file(tiny_gpt2 / "model.safetensors")
    assert any(not torch.equal(trained[k], base[k]) for k in base if k in trained)
    stats = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    check_step_stats(stats)


def run_dialogsum(name: str, model: Path, data: Path, classifier: Path, tmp_path: Path) -> dict:
    overrides = recipe_overrides(name, model, data, classifier)
    run = tmp_path / "run"
    result = run_cli(
        "train", name, "--run-dir", str(run), *set_args([f"{k}={v}" for k, v in overrides.items()])
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    check_step_stats(stats)
    summary = json.loads((run / "eval.json").read_text())
    assert summary["toxicity"]["scorer"] == "classifier"
    assert 0.0 <= summary["toxicity"]["before"]["mean"] <= 1.0
    rouge = next(m for m in summary["metrics"] if m["name"] == "extra/rouge")
    assert 0.0 <= rouge["before"]["mean"] <= 1.0 and 0.0 <= rouge["after"]["mean"] <= 1.0
    # the summaries were scored against each dialogue's own reference summary
    rows = [json.loads(line) for line in (run / "eval.jsonl").read_text().splitlines()]
    references = {
        json.loads(line)["dialogue"][-60:]: json.loads(line)["summary"]
        for line in data.read_text().splitlines()
    }
    row = rows[0]
    reference = next(s for d, s in references.items() if d in row["prompt"])
    assert row["scores_before"]["extra/rouge"] == pytest.approx(rouge_l(row["before"], reference))
    return overrides


def rouge_l(response: str, reference: str) -> float:
    from rouge_score import rouge_scorer

    return (
        rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
        .score(reference, response)["rougeL"]
        .fmeasure
    )


def test_flan_t5_dialogsum_detox_seq2seq_lora(tiny_t5, hate_classifier, dialogsum_file, tmp_path):
    overrides = run_dialogsum(
        "flan-t5-dialogsum-detox", tiny_t5, dialogsum_file, hate_classifier, tmp_path
    )
    trainer = one_step_in_process("flan-t5-dialogsum-detox", overrides)
    assert trainer.policy.seq2seq and trainer.policy.module.has_adapter
    assert trainer.train_prompts[0].text.startswith("Summarize the following conversation.")


@pytest.mark.skipif(not DIALOGSUM.exists(), reason="../shared/data/dialogsum is not present")
def test_flan_t5_dialogsum_detox_on_shared_dialogsum_dev(tiny_t5, hate_classifier, tmp_path):
    run_dialogsum("flan-t5-dialogsum-detox", tiny_t5, DIALOGSUM, hate_classifier, tmp_path)


def test_flan_t5_continues_an_existing_adapter_trainable(
    tiny_t5, hate_classifier, dialogsum_file, tmp_path
):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    adapter = tmp_path / "adapter"
    base = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5)
    get_peft_model(
        base, LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=4, target_modules=["q", "v"])
    ).save_pretrained(adapter)
    overrides = recipe_overrides(
        "flan-t5-dialogsum-detox", tiny_t5, dialogsum_file, hate_classifier
    )
    trainer = one_step_in_process(
        "flan-t5-dialogsum-detox", overrides | {"model.adapter": str(adapter)}
    )
    lora_a = [p for n, p in trainer.policy.module.lm.named_parameters() if "lora_A" in n]
    assert lora_a and lora_a[0].shape[0] == 4, "the adapter keeps its own LoRA config (r=4)"


def test_tinyllama_qlora_recipe_with_quantization_off_on_tiny_llama_chat(
    tiny_llama, hate_classifier, dialogsum_file, tmp_path
):
    """The recipe's chat template, EOS and LoRA path, in float32: 4-bit needs CUDA (the test
    below runs the 4-bit path where a GPU is present)."""
    overrides = run_dialogsum(
        "tinyllama-dialogsum-detox-qlora", tiny_llama, dialogsum_file, hate_classifier, tmp_path
    )
    trainer = one_step_in_process("tinyllama-dialogsum-detox-qlora", overrides)
    ids = trainer.train_prompts[0].input_ids.tolist()
    text = trainer.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>user") and text.endswith("<|im_start|>assistant\n")
    im_end = trainer.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in trainer.eos_ids, "the chat end-of-turn token stops generation"


@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
    reason="4-bit (bitsandbytes NF4) needs a CUDA GPU and bitsandbytes",
)
def test_tinyllama_qlora_recipe_in_4bit_on_a_gpu(tiny_llama, hate_classifier, dialogsum_file):
    overrides = recipe_overrides(
        "tinyllama-dialogsum-detox-qlora", tiny_llama, dialogsum_file, hate_classifier
    )
    overrides["model.quantization"] = "4bit"
    trainer = one_step_in_process("tinyllama-dialogsum-detox-qlora", overrides)
    from rewardtune.models.hub import is_bitsandbytes

    assert is_bitsandbytes(trainer.policy.module.lm) and trainer.policy.module.has_adapter


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_4bit_without_cuda_exits_2_with_how_to_turn_it_off(
    tiny_llama, hate_classifier, dialogsum_file, tmp_path
):
    overrides = recipe_overrides(
        "tinyllama-dialogsum-detox-qlora", tiny_llama, dialogsum_file, hate_classifier
    )
    overrides["model.quantization"] = "4bit"
    result = run_cli(
        "train",
        "tinyllama-dialogsum-detox-qlora",
        "--run-dir",
        str(tmp_path / "r"),
        *set_args([f"{k}={v}" for k, v in overrides.items()]),
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "CUDA" in last and "model.quantization=none" in last
