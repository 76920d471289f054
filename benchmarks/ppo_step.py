"""PPO step benchmark. Prints figures; never run by the test suite.

W1 (CPU): SmolLM2-135M-Instruct (GGUF, float32), 2 threads, LoRA r=16 alpha=16 dropout 0.05,
batch 16, mini-batch 4, 1 PPO epoch, 32 new tokens (top_k=0, top_p=1.0), VADER reward on the
response, 64 prompts of 4-12 tokens, one warm-up step then 3 timed steps.

    python benchmarks/ppo_step.py --workload W1
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from rewardtune import PPOTrainer, load_config
from rewardtune.rewards.lexicon import VaderReward

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


def w1_prompt_file(folder: Path) -> Path:
    """64 prompts of 4-12 tokens (the openings above, repeated with a counter)."""
    lines = [f"{W1_PROMPTS[i % len(W1_PROMPTS)]} {'again ' * (i % 4)}".strip() for i in range(64)]
    path = folder / "w1_prompts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def w1_config(prompts: Path):
    overrides = {
        "model.name": "smollm2-135m-instruct",
        "model.lora": {"r": 16, "alpha": 16, "dropout": 0.05},
        "data.source": str(prompts),
        "data.eval_fraction": 0.0,
        "generation.max_new_tokens": 32,
        "generation.min_new_tokens": 32,
        "generation.top_k": 0,
        "generation.top_p": 1.0,
        "ppo.batch_size": 16,
        "ppo.mini_batch_size": 4,
        "ppo.ppo_epochs": 1,
        "ppo.steps": 4,
    }
    return load_config("smollm2-positive", [f"{k}={json.dumps(v)}" for k, v in overrides.items()])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_w1(timed_steps: int) -> dict:
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        config = w1_config(w1_prompt_file(Path(tmp)))
        trainer = PPOTrainer(config)
        reward = VaderReward(input="response")
        rows = []
        for i, batch in enumerate(trainer.dataloader):
            if i > timed_steps:
                break
            start = time.perf_counter()
            responses = trainer.generate(batch["input_ids"])
            t_gen = time.perf_counter()
            scores = reward(batch["query"], trainer.decode(responses))
            t_reward = time.perf_counter()
            trainer._timings["reward"] = t_reward - t_gen
            stats = trainer.step(batch["input_ids"], responses, scores)
            end = time.perf_counter()
            tokens = sum(len(r) for r in responses)
            rows.append(
                {
                    "total": end - start,
                    "rollout": stats["time/rollout"],
                    "reward": t_reward - t_gen,
                    "update": stats["time/update"],
                    "tokens": tokens,
                }
            )
        timed = rows[1:]  # the first step is the warm-up
    n = len(timed)
    mean = {k: sum(r[k] for r in timed) / n for k in timed[0]}
    return {
        "seconds_per_step": mean["total"],
        "rollout_s": mean["rollout"],
        "reward_s": mean["reward"],
        "update_s": mean["update"],
        "samples_per_s": 16 / mean["total"],
        "generated_tokens_per_s": mean["tokens"] / mean["total"],
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="W1", choices=["W1"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    args = parser.parse_args()
    figures = run_w1(args.steps)
    print(
        f"workload {args.workload}: rewardtune, SmolLM2-135M float32 CPU x{torch.get_num_threads()} threads"
    )
    for key, value in figures.items():
        print(f"  {key:24s} {value:10.3f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
