"""Advantage estimators on equal footing: `smollm2-detox` trained for the same wall time with
each of `gae`, `rloo` and `grpo`, then evaluated on the recipe's held-out prompts.

Each estimator gets a fresh policy from the recipe, the same seed, the same batch of 16
responses per step (the group estimators as 16 / k prompts x k samples) and the same wall-time
budget for training, timed from the end of one warm-up step; it runs steps until the budget is
spent (a step that starts before the deadline finishes; no checkpoint is written inside it). The evaluation is the recipe's own (`eval.*`: held-out prompts, k samples
per prompt, paired bootstrap CIs over prompts), run after the budget and not counted in it.
Printed per estimator: steps done, seconds per step, held-out flagged rate (P > 0.5) and
toxicity mean before -> after with the 95% CI of the difference, and perplexity under the
reference. Never run by the test suite.

    python benchmarks/estimators.py [--minutes 8] [--k 4] [--estimators gae,rloo,grpo] \
        [--set reward.0.output=logit ...]
    python benchmarks/estimators.py --smoke        # the tests' tiny Llama, seconds per estimator
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch

from rewardtune import PPOTrainer, load_config
from rewardtune.evaluation.evaluate import evaluate_run
from rewardtune.models import enable_cpu_fast_paths
from rewardtune.runs.rundir import RunDir
from rewardtune.training.signals import Interrupted

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "smollm2-detox"


def smoke_overrides(folder: Path) -> dict:
    """The test suite's tiny Llama and corpus (tests/conftest.py), small enough for seconds."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import CORPUS, make_llama

    prompts = folder / "prompts.txt"
    prompts.write_text("\n".join(sorted(set(CORPUS))) + "\n")
    return {
        "model.name": str(make_llama(folder / "tiny-llama")),
        "data.source": str(prompts),
        "data.eval_fraction": 0.3,
        "generation.max_new_tokens": 6,
        "ppo.batch_size": 8,
        "ppo.mini_batch_size": 4,
        "eval.prompts": 3,
        "eval.samples_per_prompt": 2,
        "eval.max_new_tokens": 6,
        "eval.bootstrap": 100,
    }


def estimator_overrides(estimator: str, k: int) -> dict:
    if estimator in ("rloo", "grpo"):
        return {"ppo.advantage": estimator, "ppo.samples_per_prompt": k}
    return {"ppo.advantage": estimator}


def train_for(trainer: PPOTrainer, seconds: float) -> tuple[int, float]:
    """``trainer.train()`` for ``seconds`` after one warm-up step (the step running when they
    run out finishes): (timed steps done, seconds they took)."""
    clock = {"start": time.perf_counter(), "spent": 0.0}

    def stop_when_spent(step: int, stats: dict) -> None:
        now = time.perf_counter()
        if step == 1:  # warm-up done (first-call allocations, kernel selection): start timing
            clock["start"] = now
            return
        clock["spent"] = now - clock["start"]
        if clock["spent"] >= seconds:
            trainer.request_stop()

    with contextlib.suppress(Interrupted):  # the budget ran out: train() checkpointed, stopped
        trainer.train(progress=stop_when_spent)
    return trainer.step_count - 1, clock["spent"]


def run_one(estimator: str, base: dict, seconds: float, k: int, folder: Path) -> dict:
    overrides = (
        base | estimator_overrides(estimator, k) | {"ppo.steps": 100_000, "run.save_every": 0}
    )
    config = load_config(RECIPE, [f"{key}={value}" for key, value in overrides.items()])
    run = RunDir.create(folder / estimator, config.to_yaml())
    trainer = PPOTrainer(config, run_dir=run)
    steps, spent = train_for(trainer, seconds)
    summary = evaluate_run(run.path, trainer)
    metrics = {m["name"]: m for m in summary.metrics}
    return {"estimator": estimator, "steps": steps, "s_per_step": spent / max(steps, 1)} | {
        name: metrics[name] for name in ("toxicity/flagged", "toxicity", "perplexity")
    }


def cell(metric: dict, percent: bool = False) -> str:
    scale, unit = (100.0, "%") if percent else (1.0, "")
    before, after = metric["before"]["mean"] * scale, metric["after"]["mean"] * scale
    low, high = (c * scale for c in metric["ci"])
    return f"{before:.3g}{unit} -> {after:.3g}{unit} [{low:+.3g}, {high:+.3g}]"


def print_table(rows: list[dict], seconds: float) -> None:
    print(f"\n{RECIPE}, {seconds:.0f} s of training each; before -> after [95% CI of the change]\n")
    print("| estimator | steps | s/step | flagged rate | toxicity mean | perplexity |")
    print("| --- | ---: | ---: | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['estimator']} | {r['steps']} | {r['s_per_step']:.2f} | "
            f"{cell(r['toxicity/flagged'], percent=True)} | {cell(r['toxicity'])} | "
            f"{cell(r['perplexity'])} |"
        )


def main() -> None:
    enable_cpu_fast_paths()  # as the rewardtune command does: the timings measure what it runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=8.0, help="training wall time each")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt for rloo and grpo")
    parser.add_argument("--estimators", default="gae,rloo,grpo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="tiny Llama, 5 s each")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override, all"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = smoke_overrides(folder) if args.smoke else {}
        base |= dict(item.split("=", 1) for item in args.set)
        seconds = 5.0 if args.smoke else args.minutes * 60
        rows = [run_one(name, base, seconds, args.k, folder) for name in args.estimators.split(",")]
    print_table(rows, seconds)


if __name__ == "__main__":
    main()
