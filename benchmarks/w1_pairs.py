"""W1 against classic TRL or W1-G against GRPOTrainer, in pairs, phases set against limits.

``--against classic`` (the default) runs ``benchmarks/trl_classic_w1.py`` (TRL 0.11.4) and
``benchmarks/ppo_step.py --workload W1``; ``--against grpo`` runs ``benchmarks/trl_grpo_w1g.py``
(TRL's current ``GRPOTrainer``) and ``benchmarks/ppo_step.py --workload W1G``. Each TRL harness
runs in its own venv (its docstring says how to build it; ``--trl-python`` overrides where),
rewardtune in this one. The two alternate, ``--pairs`` times, each in a fresh process (so peak
RSS is each run's own), and it prints every pair, the median samples/s ratio and the per-phase
split:

- rewardtune: sample (``generate()``), score (the reference's forward: ``time/rollout`` minus
  sampling), update (``time/update``).
- classic TRL: sample (``ppo_trainer.generate``) and ``step()``, which runs the policy's and the
  reference's forward passes and then the update.
- GRPOTrainer: sample (``model.generate``) and the rest of the step: the loss's forward and
  backward and the optimizer step (its default ``beta`` 0 runs no reference forward).

Before the pairs, in this process, it measures the machine: float32 matmul throughput on the
update's shapes (a mini-batch of 44-token sequences: 4 for W1, 16 for W1-G) through oneDNN and
through MKL (``torch.nn.functional.linear``), and memory read bandwidth (a sum over 512 MiB).
Each phase's limit is max(FLOPs / best matmul FLOP/s, bytes / bandwidth), with the FLOPs and
bytes that ``ppo_step.py`` prints for the step it ran (classic TRL's step: two forwards and the
update; GRPOTrainer's: the update; the same tokens). Never run by the test suite.

    python benchmarks/w1_pairs.py [--pairs 3] [--trl-python /tmp/venv-trl/bin/python]
    python benchmarks/w1_pairs.py --against grpo [--pairs 3]   # --trl-python: /tmp/venv-grpo
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Baseline:
    """A TRL harness and the rewardtune workload that mirrors it."""

    script: str
    workload: str  # ppo_step.py --workload
    python: str  # its own venv's interpreter
    name: str
    step_name: str  # what its update_s covers
    step_limit: str  # the phase_limits key of that work
    mini_batch: int  # sequences in one forward + backward of the update


BASELINES = {
    "classic": Baseline(
        "trl_classic_w1.py", "W1", "/tmp/venv-trl/bin/python", "TRL", "step()", "trl_step", 4
    ),
    "grpo": Baseline(
        "trl_grpo_w1g.py", "W1G", "/tmp/venv-grpo/bin/python", "GRPOTrainer", "update", "update", 16
    ),
}


def timed(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def machine_limits(mini_batch: int, threads: int = 2) -> dict[str, float]:
    """Measured float32 matmul FLOP/s (oneDNN and MKL, best of the update's shapes for
    ``mini_batch`` sequences of 44 tokens) and memory read bytes/s of this machine, on
    ``threads`` threads."""
    torch.set_num_threads(threads)
    data = torch.randn(128 * 1024 * 1024)  # 512 MiB
    bandwidth = data.numel() * 4 / timed(data.sum, 5)
    del data
    rates = {"onednn": 0.0, "mkl": 0.0}
    onednn = torch.ops.mkldnn._linear_pointwise
    rows = mini_batch * 44
    with torch.inference_mode():
        for k, n in ((576, 1536), (1536, 576), (576, 49152)):
            x, w = torch.randn(rows, k), torch.randn(n, k)
            flop = 2 * rows * k * n
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


def print_pairs(pairs: list[tuple[dict, dict]], limits: dict, baseline: Baseline) -> None:
    name = baseline.name
    print(
        f"pair | {name} s/step (generate + {baseline.step_name}) | rewardtune s/step "
        f"(sample / score / update) | samples/s ratio | peak RSS {name} / ours MiB"
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
    print(f"median samples/s ratio rewardtune / {name}: {statistics.median(ratios):.2f}x")
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
        (f"{name} generate", trl["rollout_s"], floor["sample"]),
        (f"{name} {baseline.step_name}", trl["update_s"], floor[baseline.step_limit]),
    ]
    print("phase (middle pair) | seconds | limit seconds | x limit")
    for phase, seconds, limit in rows:
        print(f"{phase} | {seconds:.2f} | {limit:.2f} | {seconds / limit:.1f}x")
    print(
        json.dumps(
            {
                "workload": baseline.workload,
                "pairs": pairs,
                "limits": limits,
                "phase_limits": floor,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--against",
        default="classic",
        choices=sorted(BASELINES),
        help="classic: W1 against TRL 0.11.4's PPOTrainer; grpo: W1-G against GRPOTrainer",
    )
    parser.add_argument(
        "--trl-python", default=None, help="the TRL venv's python (default: the harness's own)"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run")
    args = parser.parse_args()
    baseline = BASELINES[args.against]
    trl_python = args.trl_python or baseline.python
    limits = machine_limits(baseline.mini_batch)
    steps = ["--steps", str(args.steps)]
    ours_command = [sys.executable, str(HERE / "ppo_step.py"), "--workload", baseline.workload]
    pairs = []
    for _ in range(args.pairs):
        trl = last_json([trl_python, str(HERE / baseline.script), *steps])
        ours = last_json([*ours_command, *steps])
        pairs.append((trl, ours))
    print_pairs(pairs, limits, baseline)


if __name__ == "__main__":
    main()
