"""W1 against classic TRL, in pairs, with each phase set against the machine's limits.

Runs ``benchmarks/trl_classic_w1.py`` (TRL 0.11.4, in its own venv: see that script for the
set-up) and ``benchmarks/ppo_step.py --workload W1`` (rewardtune, this venv) one after the
other, ``--pairs`` times, each in a fresh process (so peak RSS is each run's own), and prints
every pair, the median samples/s ratio and the per-phase split:

- rewardtune: sample (``generate()``), score (the reference's forward: ``time/rollout`` minus
  sampling), update (``time/update``).
- TRL: sample (``ppo_trainer.generate``) and ``step()``, which runs the policy's and the
  reference's forward passes and then the update.

Before the pairs, in this process, it measures the machine: float32 matmul throughput on the
update's shapes through oneDNN and through MKL (``torch.nn.functional.linear``), and memory read
bandwidth (a sum over 512 MiB). Each phase's limit is max(FLOPs / best matmul FLOP/s, bytes /
bandwidth), with the FLOPs and bytes that ``ppo_step.py`` prints for the step it ran (TRL's
step: two forwards and the update, the same tokens). Never run by the test suite.

    python benchmarks/w1_pairs.py [--pairs 3] [--trl-python /tmp/venv-trl/bin/python]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def timed(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def machine_limits(threads: int = 2) -> dict[str, float]:
    """Measured float32 matmul FLOP/s (oneDNN and MKL, best of the update's shapes) and memory
    read bytes/s of this machine, on ``threads`` threads."""
    torch.set_num_threads(threads)
    data = torch.randn(128 * 1024 * 1024)  # 512 MiB
    bandwidth = data.numel() * 4 / timed(data.sum, 5)
    del data
    rates = {"onednn": 0.0, "mkl": 0.0}
    onednn = torch.ops.mkldnn._linear_pointwise
    with torch.inference_mode():
        for k, n in ((576, 1536), (1536, 576), (576, 49152)):
            x, w = torch.randn(176, k), torch.randn(n, k)  # 4 sequences x 44 tokens
            flop = 2 * 176 * k * n
            kernels = {
                "onednn": lambda x=x, w=w: onednn(x, w, None, "none", [None], ""),
                "mkl": lambda x=x, w=w: torch.nn.functional.linear(x, w),
            }
            for name, kernel in kernels.items():
                rates[name] = max(rates[name], flop / timed(kernel, 10))
    return {
        "bandwidth": bandwidth,
        "flops_onednn": rates["onednn"],
        "flops_mkl": rates["mkl"],
        "flops": max(rates.values()),
    }


def last_json(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def phase_limits(ours: dict, limits: dict) -> dict[str, float]:
    """Seconds each phase needs at the machine's limits (same work for both tools)."""
    flops = limits["flops"]
    sample = max(ours["sample_flop"] / flops, ours["sample_bytes"] / limits["bandwidth"])
    score, update = ours["score_flop"] / flops, ours["update_flop"] / flops
    return {"sample": sample, "score": score, "update": update, "trl_step": 2 * score + update}


def print_pairs(pairs: list[tuple[dict, dict]], limits: dict) -> None:
    print(
        "pair | TRL s/step (generate + step) | rewardtune s/step (sample / score / update) "
        "| samples/s ratio | peak RSS TRL / ours MiB"
    )
    ratios = []
    for i, (trl, ours) in enumerate(pairs, 1):
        ratio = ours["samples_per_s"] / trl["samples_per_s"]
        ratios.append(ratio)
        score = ours["rollout_s"] - ours["generate_s"]
        print(
            f"{i} | {trl['seconds_per_step']:.2f} ({trl['rollout_s']:.2f} + {trl['update_s']:.2f})"
            f" | {ours['seconds_per_step']:.2f} ({ours['generate_s']:.2f} / {score:.2f} / "
            f"{ours['update_s']:.2f}) | {ratio:.2f}x | {trl['peak_rss_mb']:.0f} / "
            f"{ours['peak_rss_mb']:.0f}"
        )
    print(f"median samples/s ratio rewardtune / TRL: {statistics.median(ratios):.2f}x")
    print(
        f"machine: matmul {limits['flops_onednn'] / 1e9:.0f} GFLOP/s oneDNN, "
        f"{limits['flops_mkl'] / 1e9:.0f} GFLOP/s MKL (float32, 2 threads); "
        f"memory read {limits['bandwidth'] / 1e9:.1f} GB/s"
    )
    trl, ours = pairs[len(pairs) // 2]
    floor = phase_limits(ours, limits)
    score = ours["rollout_s"] - ours["generate_s"]
    rows = [
        ("rewardtune sample", ours["generate_s"], floor["sample"]),
        ("rewardtune score", score, floor["score"]),
        ("rewardtune update", ours["update_s"], floor["update"]),
        ("TRL generate", trl["rollout_s"], floor["sample"]),
        ("TRL step()", trl["update_s"], floor["trl_step"]),
    ]
    print("phase (middle pair) | seconds | limit seconds | x limit")
    for name, seconds, limit in rows:
        print(f"{name} | {seconds:.2f} | {limit:.2f} | {seconds / limit:.1f}x")
    print(json.dumps({"pairs": pairs, "limits": limits, "phase_limits": floor}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--trl-python", default="/tmp/venv-trl/bin/python")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run")
    args = parser.parse_args()
    limits = machine_limits()
    steps = ["--steps", str(args.steps)]
    pairs = []
    for _ in range(args.pairs):
        trl = last_json([args.trl_python, str(HERE / "trl_classic_w1.py"), *steps])
        ours = last_json([sys.executable, str(HERE / "ppo_step.py"), "--workload", "W1", *steps])
        pairs.append((trl, ours))
    print_pairs(pairs, limits)


if __name__ == "__main__":
    main()
