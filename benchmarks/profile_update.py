"""Where the W2 update's time goes: update seconds and MFU per mini-batch size, and a
``torch.profiler`` table of one update. Prints figures; never run by the test suite.

W2's model and settings (``ppo_step.py``: TinyLlama-1.1B's shape, random weights, bfloat16,
LoRA r=16, batch 64, 64 prompt + 128 new tokens, 1 PPO epoch, engine fast), one trainer per
``--mini-batches`` value and ``--compile`` setting, sharing one policy. Each runs one warm-up
step and ``--steps`` timed steps (update seconds and MFU as ``ppo_step.py`` counts them), then
one more step whose update runs under the profiler. ``--compile on`` runs the trainers with
``ppo.compile: true``, ``both`` off and on; the compilation falls in the warm-up step, whose
update time is printed. Printed per mini-batch size: the update's seconds, TFLOP/s and MFU;
how busy the GPU was (kernel time / wall time of the update); kernels launched; and the top
operators by GPU time.

    python benchmarks/profile_update.py [--mini-batches 16 64] [--steps 2]
        [--compile off|on|both ...]
    python benchmarks/profile_update.py --cpu-smoke      # tiny shapes on CPU, to check the script
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from ppo_step import (
    W2_FULL,
    W2_SMOKE,
    build_w2_model,
    mean_rows,
    peak_flops,
    quiet_libraries,
    synchronize,
    w2_config,
    w2_steps,
    w2_update_flops,
)
from rewardtune import PPOTrainer
from rewardtune.models import enable_cpu_fast_paths, load_policy


def profiled_update(trainer: PPOTrainer):
    """Wraps the trainer's update so its next call runs under the profiler; returns a holder
    that gets the profile and the wall time."""
    holder: dict = {}
    update = trainer.updater.update
    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])

    def wrapped(*args, **kwargs):
        synchronize()
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            result = update(*args, **kwargs)
            synchronize()
            holder["wall"] = time.perf_counter() - start
        holder["profile"] = prof
        trainer.updater.update = update
        return result

    trainer.updater.update = wrapped
    return holder


def report(holder: dict, top: int) -> None:
    events = holder["profile"].key_averages()
    cuda = torch.cuda.is_available()
    if cuda:
        kernels = [e for e in holder["profile"].events() if e.device_type.name == "CUDA"]
        busy = sum(e.device_time for e in kernels) / 1e6  # microseconds
        print(
            f"    profiled update: {holder['wall']:.3f} s wall, GPU kernels {busy:.3f} s "
            f"({100 * busy / holder['wall']:.0f}% busy), {len(kernels)} kernels"
        )
        key = "self_device_time_total"
    else:
        print(f"    profiled update: {holder['wall']:.3f} s wall (CPU)")
        key = "self_cpu_time_total"
    table = events.table(sort_by=key, row_limit=top, max_name_column_width=48)
    print("\n".join("    " + line for line in table.splitlines()))


def main() -> None:
    enable_cpu_fast_paths()  # as the rewardtune command does: the timings measure what it runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mini-batches", nargs="+", type=int, default=[16, 64])
    parser.add_argument("--steps", type=int, default=2, help="timed steps before the profiled one")
    parser.add_argument("--top", type=int, default=15, help="operators in the table")
    parser.add_argument("--cpu-smoke", action="store_true")
    parser.add_argument(
        "--compile",
        nargs="+",
        default=["off"],
        choices=["off", "on", "both"],
        help="ppo.compile settings to run at each size (both: off and on)",
    )
    args = parser.parse_args()
    quiet_libraries()
    if not torch.cuda.is_available() and not args.cpu_smoke:
        raise SystemExit("needs a CUDA GPU (--cpu-smoke runs it tiny on CPU)")
    base, device = (W2_SMOKE, "cpu") if args.cpu_smoke else (W2_FULL, "cuda")
    peak = peak_flops(None)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_w2_model(Path(tmp) / "w2-model", base, device)
        policy = load_policy(w2_config(model_dir, Path(tmp), base, "fast").model, device)
        named = {"off": [False], "on": [True], "both": [False, True]}
        modes = [mode for name in args.compile for mode in named[name]]
        for mini, compiled in [(m, c) for m in args.mini_batches for c in modes]:
            shape = dataclasses.replace(base, mini_batch=mini)
            extra = {"ppo.compile": compiled}
            config = w2_config(model_dir, Path(tmp), shape, "fast", extra)
            trainer = PPOTrainer(config, policy=policy)
            rows = w2_steps(trainer, shape, args.steps)
            mean = mean_rows(rows[1:])
            rate = w2_update_flops(trainer, shape, mean) / mean["update"]
            mfu = f"{100 * rate / peak:.1f}%" if peak else "n/a"
            print(
                f"mini-batch {mini}, ppo.compile {compiled}: update "
                f"{mean['update']:.3f} s, {rate / 1e12:.1f} TFLOP/s, MFU {mfu}; step "
                f"{mean['total']:.3f} s; warm-up update {rows[0]['update']:.1f} s",
                flush=True,
            )
            holder = profiled_update(trainer)
            w2_steps(trainer, shape, 0)
            report(holder, args.top)
            del trainer


if __name__ == "__main__":
    main()
