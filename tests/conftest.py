"""Shared fixtures: tiny models built from configs, tokenizers that need no download."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
CORPUS = [
    "the movie was great and the actors were wonderful",
    "the food was cold and the waiter was rude to us",
    "i hated every minute of this terrible film",
    "what a lovely day for a walk in the park",
    "the driver in front of me was an idiot",
    "summarize the following conversation person one said hello",
    "my neighbour plays loud music every night and i am tired",
    "this product broke after two days, a waste of money",
    "excellent service, friendly staff, would come back again",
    "x marks the spot, x x x and the box of xylophones",
] * 20
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(specials: list[str], vocab_size: int, corpus: list[str], **names):
    """A byte-level BPE trained in milliseconds on a few sentences, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names)


def policy_tokenizer():
    """pad=0, eos=1 (T5's convention), then unk, bos and chat markers."""
    specials = ["<pad>", "</s>", "<unk>", "<s>", "<|im_start|>", "<|im_end|>"]
    tok = build_tokenizer(
        specials,
        400,
        CORPUS,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 256
    return tok


def save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_llama(folder: Path, seed: int = 0) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = policy_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=3,
        tie_word_embeddings=False,
    )
    return save(LlamaForCausalLM(config), tok, folder)


def make_gpt2(folder: Path, seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    tok = policy_tokenizer()
    config = GPT2Config(
        vocab_size=len(tok),
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=256,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=3,
    )
    return save(GPT2LMHeadModel(config), tok, folder)


def make_t5(folder: Path, seed: int = 0) -> Path:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    tok = policy_tokenizer()
    config = T5Config(
        vocab_size=len(tok),
        d_model=32,
        d_ff=64,
        d_kv=8,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return save(T5ForConditionalGeneration(config), tok, folder)


def make_classifier(folder: Path, labels: tuple[str, str], seed: int = 0) -> Path:
    """A RoBERTa-shaped sequence classifier with its own (different) BPE tokenizer."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(seed)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = build_tokenizer(
        specials,
        300,
        [c.upper() + " " + c for c in CORPUS[:10]] * 5,
        bos_token="<s>",
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
    )
    tok.model_max_length = 64
    config = RobertaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=66,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        num_labels=2,
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    return save(RobertaForSequenceClassification(config), tok, folder)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_llama(models_dir) -> Path:
    return make_llama(models_dir / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2(models_dir) -> Path:
    return make_gpt2(models_dir / "tiny-gpt2")


@pytest.fixture(scope="session")
def tiny_t5(models_dir) -> Path:
    return make_t5(models_dir / "tiny-t5")


@pytest.fixture(scope="session")
def hate_classifier(models_dir) -> Path:
    return make_classifier(models_dir / "tiny-roberta-hate", ("nothate", "hate"))


@pytest.fixture(scope="session")
def sentiment_classifier(models_dir) -> Path:
    return make_classifier(models_dir / "tiny-roberta-sentiment", ("NEGATIVE", "POSITIVE"))


@pytest.fixture(scope="session")
def prompts_file(models_dir) -> Path:
    path = models_dir / "prompts.txt"
    path.write_text("\n".join(sorted(set(CORPUS))) + "\n")
    return path


def tiny_overrides(model: Path, prompts: Path, steps: int = 2, **extra) -> list[str]:
    """--set arguments that make any recipe run in seconds on a tiny model."""
    values = {
        "model.name": str(model),
        "data.source": str(prompts),
        "data.eval_fraction": 0.2,
        "generation.max_new_tokens": 6,
        "generation.response_tokens": "null",
        "ppo.batch_size": 4,
        "ppo.mini_batch_size": 2,
        "ppo.ppo_epochs": 1,
        "ppo.steps": steps,
        "eval.prompts": 2,
        "eval.max_new_tokens": 4,
        "eval.bootstrap": 100,
        "run.save_every": 1,
    } | extra
    return [f"{k}={v}" for k, v in values.items()]


def set_args(overrides: list[str]) -> list[str]:
    """["a.b=1", ...] -> ["--set", "a.b=1", ...]"""
    return [arg for o in overrides for arg in ("--set", o)]


def run_cli(
    *args: str, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`python -m rewardtune ARGS` in a subprocess, as a user runs it."""
    full_env = os.environ | {"PYTHONUNBUFFERED": "1", "COLUMNS": "200"} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "rewardtune", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=ROOT,
    )


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory, tiny_llama, prompts_file) -> tuple[Path, Path]:
    """Two trained and evaluated tiny runs (learning rates 1e-2 and 1e-3), logged to
    TensorBoard too, evaluated on the same prompts with the same seed: for the model card,
    `compare` and tracker tests."""
    root = tmp_path_factory.mktemp("two-runs")
    recipe = root / "tiny.yaml"
    recipe.write_text("reward:\n  - {type: vader, input: response}\n")
    runs = []
    for name, lr in (("run-a", 1e-2), ("run-b", 1e-3)):
        extra = {"ppo.learning_rate": lr, "run.trackers": "[jsonl,tensorboard]"}
        overrides = tiny_overrides(tiny_llama, prompts_file, steps=2, **extra)
        result = run_cli("train", str(recipe), "--run-dir", str(root / name), *set_args(overrides))
        assert result.returncode == 0, result.stderr[-3000:]
        runs.append(root / name)
    return runs[0], runs[1]
