"""Samples/s of PPO steps for 1 and 2 processes on CPU (gloo) on the tiny Llama; prints the ratio.
Never run by the test suite.

    python benchmarks/scaling.py [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import CORPUS, make_llama  # noqa: E402  (tiny models are built by the test helpers)


def run(processes: int, steps: int, folder: Path) -> float:
    """Mean throughput/samples_per_s over the steps after the first (warm-up)."""
    recipe = folder / "bench.yaml"
    recipe.write_text("reward: [{type: vader, input: response}]\neval: {enabled: false}\n")
    run_dir = folder / f"run-{processes}"
    overrides = {
        "model.name": str(folder / "tiny-llama"),
        "data.source": str(folder / "prompts.txt"),
        "data.eval_fraction": 0.0,
        "generation.max_new_tokens": 16,
        "ppo.batch_size": 32,
        "ppo.mini_batch_size": 8,
        "ppo.ppo_epochs": 1,
        "ppo.steps": steps,
        "run.save_every": 0,
    }
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(processes),
        "--cpu",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "rewardtune",
        "train",
        str(recipe),
        "--run-dir",
        str(run_dir),
        *sets,
    ]
    threads = str(max(1, (os.cpu_count() or 2) // processes))
    subprocess.run(
        cmd, check=True, capture_output=True, env=os.environ | {"OMP_NUM_THREADS": threads}
    )
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    return sum(r["throughput/samples_per_s"] for r in rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_llama(folder / "tiny-llama")
        (folder / "prompts.txt").write_text("\n".join(sorted(set(CORPUS))) + "\n")
        one = run(1, args.steps, folder)
        two = run(2, args.steps, folder)
    print(f"1 process : {one:8.2f} samples/s")
    print(f"2 processes: {two:8.2f} samples/s")
    print(f"ratio 2/1  : {two / one:8.2f}")


if __name__ == "__main__":
    main()
