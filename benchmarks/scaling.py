"""Data-parallel scaling on CPU: samples/s of one and two processes (gloo), through the CLI.

The test suite's tiny Llama (tests/conftest.py: hidden 32, 2 layers, a 400-token BPE) is built
in a temporary folder, with a prompt file and a Python reward written beside it.
Each run is the real command a user types, with eval off and only the final checkpoint:

    python -m rewardtune train RECIPE.yaml --set ... --run-dir RUN                  # 1 process
    python -m accelerate.commands.launch --multi_gpu --num_processes 2 \\
        --num_machines 1 --mixed_precision no --dynamo_backend no --main_process_port 0 \\
        -m rewardtune train RECIPE.yaml --set ... --run-dir RUN                     # 2 processes

(``--multi_gpu`` because accelerate's ``--cpu`` selects its one-process launcher; without CUDA
the two processes use gloo. Port 0 picks a free port.) Both runs: global batch 16, mini-batch 8,
1 PPO epoch, exactly 16 new tokens, 1 warm-up step + 8 timed steps, the same 2 cores in all:
OMP_NUM_THREADS=2 for one process, 1 each for two. A third run, one process of one thread, is
printed as context: on a model this small, per-op overhead (and a second thread's
synchronisation, worst on a busy machine) can outweigh the work, so the ratio says as much
about threads as about data parallelism.

samples/s = global batch * timed steps / the sum of the timed steps' seconds, where a step's
seconds (rollout + reward + update, as rank 0 measured them) are read back from metrics.jsonl
as ``global batch / throughput/samples_per_s``. Process start, model loading and the final
checkpoint are outside it; the command's wall time is printed beside it. The machine's other
load shows in the printed load average, and the median step's samples/s is printed beside the
mean because a descheduled thread can stall one step for seconds. Never run by the test suite.

    python benchmarks/scaling.py [--steps 8] [--warmup 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rewardtune.distributed import launch_arguments

ROOT = Path(__file__).resolve().parents[1]

BATCH = 16
MINI_BATCH = 8
NEW_TOKENS = 16
CORES = 2
RUNS = [(1, CORES), (2, CORES // 2), (1, 1)]  # (processes, threads each); the last is context
SENTENCES = [
    "the movie was great and the actors were wonderful",
    "the food was cold and the waiter was rude to us",
    "what a lovely day for a walk in the park",
    "my neighbour plays loud music every night",
    "this product broke after two days",
    "excellent service and friendly staff",
    "the train was late again this morning",
    "we watched the sunset from the hill",
]
REWARD = '''\
def vowel_fraction(responses):
    """The share of vowels among the letters of each response (0 when it has none)."""
    out = []
    for text in responses:
        letters = [c for c in text.lower() if c.isalpha()]
        out.append(sum(c in "aeiou" for c in letters) / len(letters) if letters else 0.0)
    return out
'''


def build_tiny_llama(folder: Path) -> Path:
    """The test suite's tiny Llama (tests/conftest.py): 2 layers of hidden 32, a 400-token BPE."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_llama

    return make_llama(folder)


def write_recipe(folder: Path) -> Path:
    """The recipe, its prompt file and its reward file; sizes come as --set overrides."""
    model = build_tiny_llama(folder / "tiny-llama")
    prompts = folder / "prompts.txt"
    prompts.write_text("\n".join(f"{s} {i}" for i in range(8) for s in SENTENCES) + "\n")
    reward = folder / "reward.py"
    reward.write_text(REWARD)
    recipe = {
        "model": {"name": str(model), "dtype": "float32"},  # LoRA r 16 by default
        "reward": [{"type": "python", "function": f"{reward}:vowel_fraction", "input": "response"}],
        "data": {"source": str(prompts), "eval_fraction": 0.0},
        "generation": {"top_k": 0, "top_p": 1.0},
    }
    path = folder / "scaling.yaml"
    path.write_text(json.dumps(recipe, indent=2))  # JSON is YAML
    return path


def overrides(steps: int) -> list[str]:
    values = {
        "ppo.batch_size": BATCH,
        "ppo.mini_batch_size": MINI_BATCH,
        "ppo.ppo_epochs": 1,
        "ppo.steps": steps,
        "generation.max_new_tokens": NEW_TOKENS,
        "generation.min_new_tokens": NEW_TOKENS,
        "eval.enabled": "false",
        "run.save_every": 0,
        "run.log_samples": 0,
    }
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def command(processes: int, recipe: Path, steps: int, run_dir: Path) -> list[str]:
    train = ["train", str(recipe), *overrides(steps), "--run-dir", str(run_dir)]
    if processes == 1:
        return [sys.executable, "-m", "rewardtune", *train]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", *launch_arguments(processes)]
    return [*launcher, "-m", "rewardtune", *train]


def train(processes: int, threads: int, recipe: Path, steps: int, run_dir: Path) -> float:
    """Run the command with ``threads`` threads per process; returns its wall seconds."""
    env = os.environ | {
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    start = time.perf_counter()
    done = subprocess.run(
        command(processes, recipe, steps, run_dir), env=env, capture_output=True, text=True
    )
    if done.returncode:
        sys.exit(f"{processes}-process run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def step_rates(metrics: Path, warmup: int) -> list[float]:
    """``throughput/samples_per_s`` of each step after the warm-up (global samples / seconds)."""
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [row["throughput/samples_per_s"] for row in rows if row["step"] >= warmup]


def measure(processes: int, threads: int, recipe: Path, args, run_dir: Path) -> dict:
    load = os.getloadavg()[0]  # before the run: what else this machine is doing
    wall = train(processes, threads, recipe, args.warmup + args.steps, run_dir)
    rates = step_rates(run_dir / "metrics.jsonl", args.warmup)
    seconds = sum(BATCH / rate for rate in rates)  # each step's rollout + reward + update
    return {
        "processes": processes,
        "threads_per_process": threads,
        "samples_per_s": BATCH * len(rates) / seconds,
        "median_step_samples_per_s": statistics.median(rates),
        "timed_steps": len(rates),
        "wall_s": wall,
        "load_average_1m_before": load,
    }


def describe(figures: dict) -> str:
    p, t = figures["processes"], figures["threads_per_process"]
    return (
        f"{p} process{'es' if p > 1 else '  '} x {t} thread{'s' if t > 1 else ' '}: "
        f"{figures['samples_per_s']:7.2f} samples/s (median step "
        f"{figures['median_step_samples_per_s']:7.2f}; command wall {figures['wall_s']:.1f}s, "
        f"load average before {figures['load_average_1m_before']:.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=1, help="first steps left out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipe = write_recipe(folder)
        runs = [measure(p, t, recipe, args, folder / f"run-{p}x{t}") for p, t in RUNS]
    print(
        f"scaling: tiny Llama (hidden 32, 2 layers), CPU gloo, global batch {BATCH}, mini-batch "
        f"{MINI_BATCH}, {NEW_TOKENS} new tokens, {args.warmup} warm-up + {args.steps} timed steps"
    )
    one, two, single_thread = runs
    for figures in (one, two):
        print("  " + describe(figures))
    print(
        f"  2 processes / 1 process: {two['samples_per_s'] / one['samples_per_s']:.2f}x "
        f"(median steps: {two['median_step_samples_per_s'] / one['median_step_samples_per_s']:.2f}x)"
    )
    print("  context, " + describe(single_thread))
    print(json.dumps({"ratio": two["samples_per_s"] / one["samples_per_s"], "runs": runs}))


if __name__ == "__main__":
    main()
