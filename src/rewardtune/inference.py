"""Loading trained runs for sampling and merging: `rewardtune generate` and `rewardtune merge`."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from rewardtune.config import GenerationConfig, ModelConfig, load_config
from rewardtune.data.prompts import tokenize_prompt
from rewardtune.models import Policy, load_policy
from rewardtune.models.hub import merge_adapter, save_hf_folder
from rewardtune.runs.checkpoints import load_trained_weights
from rewardtune.runs.rundir import CONFIG, FINAL, STATE
from rewardtune.sampling import rollout
from rewardtune.sampling.engines import HFEngine
from rewardtune.text import printable
from rewardtune.types import RewardtuneError


@dataclass
class Target:
    """What to load: a model config, and trained weights to put in it (None = the base)."""

    model: ModelConfig
    weights: Path | None


def resolve_model_path(model: str) -> Target:
    """A run directory (its final/), a final/ folder, a checkpoint, or a base model."""
    path = Path(model)
    if (path / CONFIG).is_file():  # a run directory
        if not (path / FINAL).is_dir():
            raise RewardtuneError(
                f"run {path} has no {FINAL}/ (not finished?); pass one of its checkpoints, e.g. "
                f"{path}/checkpoints/step-N"
            )
        return Target(load_config(str(path / CONFIG)).model, path / FINAL)
    if path.name == FINAL and (path.parent / CONFIG).is_file():
        return Target(load_config(str(path.parent / CONFIG)).model, path)
    if (path / STATE).is_file() and (path.parent.parent / CONFIG).is_file():  # a checkpoint
        return Target(load_config(str(path.parent.parent / CONFIG)).model, path)
    if (
        path.exists()
        and not (path / "config.json").exists()
        and not path.suffix == ".gguf"
        and not list(path.glob("*.gguf"))
    ):
        raise RewardtuneError(f"{path} is not a run directory, a checkpoint, or a model folder")
    return Target(ModelConfig(name=model, lora=None), None)


def load_target(target: Target, device: str | None = None) -> Policy:
    """A policy in eval mode with the target's trained weights in it."""
    policy = load_policy(target.model, device, with_reference=False)
    if target.weights is not None:
        load_trained_weights(policy, target.weights)
    policy.module.eval()
    return policy


def _streamer(tokenizer, out: TextIO):
    """transformers' TextStreamer, writing sanitised text to ``out``."""
    from transformers import TextStreamer

    class SafeStreamer(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            out.write(printable(text) + ("\n" if stream_end else ""))
            out.flush()

    return SafeStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def generate_stream(
    target: Target,
    prompts: list[str],
    chat: bool,
    n: int,
    max_new_tokens: int,
    seed: int,
    out: TextIO,
) -> list[str]:
    """Sample ``n`` responses per prompt (pure sampling: top_k 0, top_p 1), streaming tokens to
    ``out`` as they come (terminal-safe); returns the responses."""
    policy = load_target(target)
    tokenizer = policy.tokenizer
    if chat and not getattr(tokenizer, "chat_template", None):
        raise RewardtuneError("--chat: this model's tokenizer has no chat template")
    gen = GenerationConfig(max_new_tokens=max_new_tokens, engine="hf")
    sampler = rollout.Sampler(HFEngine(_streamer(tokenizer, out)))
    eos_ids = policy.eos_token_ids(chat)
    torch.manual_seed(seed)
    responses = []
    for text in prompts:
        prompt = tokenize_prompt(text, tokenizer, chat, None)
        for _ in range(n):
            out.write(f"\n>>> {printable(text)}\n")
            out.flush()
            sampled = rollout.generate(
                policy.module.lm,
                [prompt.input_ids],
                gen,
                tokenizer.pad_token_id,
                eos_ids,
                seq2seq=policy.seq2seq,
                sampler=sampler,
            )
            responses.append(tokenizer.decode(sampled.responses[0], skip_special_tokens=True))
            out.write("\n")
    return responses


def merge_run(run_dir: Path, out_dir: Path) -> Path:
    """Merge the adapter into the base weights and save a plain model + tokenizer (safetensors),
    loadable with ``AutoModel*.from_pretrained(out_dir)`` and no peft; full weights are copied."""
    target = resolve_model_path(str(run_dir))
    if target.weights is None:
        raise RewardtuneError(f"{run_dir} is not a run: nothing to merge")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise RewardtuneError(f"{out_dir} already exists and is not empty; choose another OUT_DIR")
    if target.model.lora is None and target.model.adapter is None and target.weights.name == FINAL:
        shutil.copytree(target.weights, out_dir, dirs_exist_ok=True)
        return out_dir
    if target.model.quantization != "none":
        target.model.quantization = "none"  # merge into full-precision base weights
    policy = load_target(target, "cpu")
    save_hf_folder(merge_adapter(policy.module.lm), policy.tokenizer, out_dir)
    return out_dir
