"""How the cost of a PPO step grows: seconds per step against batch size and response length.

W1's model and settings (SmolLM2-135M-Instruct float32 on CPU, 2 threads, LoRA r=16, 1 PPO
epoch, mini-batch 4, VADER reward, top_k=0 / top_p=1.0), with exactly ``length`` new tokens
(min_new_tokens = max_new_tokens) for every batch size in ``--batches`` and length in
``--lengths``, for each engine of ``--engines``. The policy is loaded once and shared by a fresh
trainer per cell; each cell runs one warm-up step and ``--steps`` timed steps. Printed per cell:
seconds per step and its split (sample / score / update), and milliseconds per generated token
per row. Writes a plot with ``--plot``. Never run by the test suite.

    python benchmarks/sweep.py [--engines fast hf] [--batches 8 16 32 64] \\
        [--lengths 16 32 64 128] [--plot docs/performance-sweep.png]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from ppo_step import mean_rows, quiet_libraries, vader_steps, w1_config, w1_prompt_file
from rewardtune import PPOTrainer
from rewardtune.models import load_policy


def cell(policy, prompts: Path, engine: str, batch: int, length: int, steps: int) -> dict:
    overrides = {
        "ppo.batch_size": batch,
        "generation.max_new_tokens": length,
        "generation.min_new_tokens": length,
    }
    trainer = PPOTrainer(w1_config(prompts, engine, overrides), policy=policy)
    rows = vader_steps(trainer, steps)
    mean = mean_rows(rows[1:])
    return {
        "engine": engine,
        "batch": batch,
        "length": length,
        "seconds_per_step": mean["total"],
        "sample_s": mean["generate"],
        "score_s": mean["rollout"] - mean["generate"],
        "update_s": mean["update"],
        "ms_per_token_step": 1000 * mean["generate"] / length,
    }


def plot(cells: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    lengths = sorted({c["length"] for c in cells})
    for engine, style in (("fast", "-o"), ("hf", "--s")):
        for i, length in enumerate(lengths):
            row = sorted(
                (c for c in cells if c["engine"] == engine and c["length"] == length),
                key=lambda c: c["batch"],
            )
            if not row:
                continue
            batches = [c["batch"] for c in row]
            color = f"C{i}"
            axes[0].plot(
                batches,
                [c["seconds_per_step"] for c in row],
                style,
                color=color,
                label=f"{engine}, {length} tokens",
            )
            axes[1].plot(batches, [c["ms_per_token_step"] for c in row], style, color=color)
    for ax, title in zip(
        axes, ("seconds per PPO step", "ms per decode step (whole batch)"), strict=True
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=["fast", "hf"])
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--lengths", nargs="+", type=int, default=[16, 32, 64, 128])
    parser.add_argument("--steps", type=int, default=1, help="timed steps per cell")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    quiet_libraries()
    torch.set_num_threads(2)
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        prompts = w1_prompt_file(Path(tmp))
        policy = load_policy(w1_config(prompts, "fast").model)
        print("engine | batch | length | s/step | sample | score | update | ms/decode step")
        for engine in args.engines:
            for length in args.lengths:
                for batch in args.batches:
                    c = cell(policy, prompts, engine, batch, length, args.steps)
                    cells.append(c)
                    print(
                        f"{engine} | {batch} | {length} | {c['seconds_per_step']:.2f} | "
                        f"{c['sample_s']:.2f} | {c['score_s']:.2f} | {c['update_s']:.2f} | "
                        f"{c['ms_per_token_step']:.1f}",
                        flush=True,
                    )
    if args.plot:
        plot(cells, args.plot)
        print(f"plot: {args.plot}")
    print(json.dumps(cells))


if __name__ == "__main__":
    main()
