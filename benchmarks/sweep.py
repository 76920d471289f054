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

``--workload W2`` runs the same grid on one CUDA GPU with W2's model and settings
(``ppo_step.py``: TinyLlama-1.1B's shape, random weights, bfloat16, LoRA r=16, 64 prompt tokens,
mini-batch 16 or the batch if smaller, the token-count reward); ``--cpu-smoke`` runs it on CPU
at W2's smoke size, only to check the script.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import tempfile
from pathlib import Path

import torch

from ppo_step import (
    W2_FULL,
    W2_SMOKE,
    build_w2_model,
    mean_rows,
    quiet_libraries,
    vader_steps,
    w1_config,
    w1_prompt_file,
    w2_config,
    w2_steps,
)
from rewardtune import PPOTrainer
from rewardtune.models import enable_cpu_fast_paths, load_policy


def cell(policy, prompts: Path, engine: str, batch: int, length: int, steps: int) -> dict:
    overrides = {
        "ppo.batch_size": batch,
        "generation.max_new_tokens": length,
        "generation.min_new_tokens": length,
    }
    trainer = PPOTrainer(w1_config(prompts, engine, overrides), policy=policy)
    return figures(vader_steps(trainer, steps), engine, batch, length)


def w2_cell(policy, model_dir: Path, base, engine: str, batch: int, length: int, steps: int):
    """One cell of W2's grid: ``base`` (a ``W2Shape``) with this batch and response length."""
    shape = dataclasses.replace(
        base, batch=batch, mini_batch=min(batch, base.mini_batch), new_tokens=length
    )
    trainer = PPOTrainer(w2_config(model_dir, model_dir.parent, shape, engine), policy=policy)
    rows = w2_steps(trainer, shape, steps)
    del trainer  # its CUDA graphs and static caches go before the next cell's
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return figures(rows, engine, batch, length)


def figures(rows: list[dict[str, float]], engine: str, batch: int, length: int) -> dict:
    mean = mean_rows(rows[1:])  # the first step is the warm-up
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


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"


def main() -> None:
    enable_cpu_fast_paths()  # as the rewardtune command does: the timings measure what it runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", nargs="+", default=["fast", "hf"])
    parser.add_argument("--batches", nargs="+", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--lengths", nargs="+", type=int, default=[16, 32, 64, 128])
    parser.add_argument("--steps", type=int, default=1, help="timed steps per cell")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--workload", default="W1", choices=["W1", "W2"])
    parser.add_argument("--cpu-smoke", action="store_true", help="W2 at a tiny size on CPU")
    args = parser.parse_args()
    quiet_libraries()
    cells = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.workload == "W1":
            torch.set_num_threads(2)
            prompts = w1_prompt_file(Path(tmp))
            policy = load_policy(w1_config(prompts, "fast").model)

            def run(engine, batch, length):
                return cell(policy, prompts, engine, batch, length, args.steps)

        else:
            if not torch.cuda.is_available() and not args.cpu_smoke:
                raise SystemExit("--workload W2 needs a CUDA GPU (--cpu-smoke runs it tiny on CPU)")
            shape, device = (W2_SMOKE, "cpu") if args.cpu_smoke else (W2_FULL, "cuda")
            model_dir = build_w2_model(Path(tmp) / "w2-model", shape, device)
            policy = load_policy(w2_config(model_dir, Path(tmp), shape, "fast").model, device)

            def run(engine, batch, length):
                return w2_cell(policy, model_dir, shape, engine, batch, length, args.steps)

        print(f"workload {args.workload}; device {device_name()}")
        print("engine | batch | length | s/step | sample | score | update | ms/decode step")
        for length in args.lengths:  # each engine in turn per cell: a cut-short run keeps pairs
            for batch in args.batches:
                for engine in args.engines:
                    c = run(engine, batch, length)
                    cells.append(c)
                    print(
                        f"{engine} | {batch} | {length} | {c['seconds_per_step']:.2f} | "
                        f"{c['sample_s']:.2f} | {c['score_s']:.2f} | {c['update_s']:.2f} | "
                        f"{c['ms_per_token_step']:.1f}",
                        flush=True,
                    )
            if args.plot:  # redrawn after each length, so a cut-short run leaves a plot
                plot(cells, args.plot)
    if args.plot:
        print(f"plot: {args.plot}")
    print(json.dumps(cells))


if __name__ == "__main__":
    main()
