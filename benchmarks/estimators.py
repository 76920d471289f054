"""Advantage estimators and loss options on equal footing: a recipe (`smollm2-detox`, or
`--recipe smollm2-constraints`) trained for the same wall time (or, on a loaded machine, the same number of steps) with each variant of
``VARIANTS`` (the estimators, and DAPO, GSPO, Dr. GRPO and TRL's RLOO ratio), then evaluated on
the recipe's held-out prompts.

Each estimator gets a fresh policy from the recipe, the same seed, the recipe's batch of
responses per step (the group estimators as batch / k prompts x k samples) and the same wall-time
budget for training, timed from the end of one warm-up step; it runs steps until the budget is
spent (a step that starts before the deadline finishes; no checkpoint is written inside it). The evaluation is the recipe's own (`eval.*`: held-out prompts, k samples
per prompt, paired bootstrap CIs over prompts), run after the budget and not counted in it.
Printed per variant: steps done, seconds per step, and before -> after with the 95% CI of the
difference of the recipe's headline metrics (``HEADLINE``: those its evaluation reports, e.g.
the flagged rate and toxicity mean of the detox recipe, constraint satisfaction and all-met of
the constraints recipe), the reward, and perplexity under the reference. ``--reward zero_one`` trains on the 0/1 reward of
``benchmarks/verifiable_reward.py`` instead of the recipe's (a verifiable reward: many groups
tie). ``--steps N`` gives every variant N steps instead of equal wall time: the choice on a
machine others load, where seconds say little. Never run by the test suite.

    python benchmarks/estimators.py [--recipe smollm2-detox] [--minutes 8] [--k 4] \
        [--estimators gae,rloo,grpo,dapo] [--reward zero_one] [--steps N] \
        [--set reward.0.output=logit ...]
    python benchmarks/estimators.py --smoke        # the tests' tiny Llama, seconds per variant
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
# metric -> its column title and whether it reads as a percentage; a recipe's table shows
# those its evaluation reports, in this order
HEADLINE = {
    "toxicity/flagged": ("flagged rate", True),
    "toxicity": ("toxicity mean", False),
    "extra/constraints": ("constraints met", True),
    "extra/constraints_all": ("all met", True),
    "reward/total": ("reward", False),
    "perplexity": ("perplexity", False),
}
ZERO_ONE = (
    f"[{{type: python, function: '{ROOT / 'benchmarks' / 'verifiable_reward.py'}"
    ":ends_a_clean_sentence'}]"
)

GROUP = "ppo.samples_per_prompt"  # set to --k for every variant below that names it
# name -> ppo overrides (docs/config.md, "Loss options", for the papers)
VARIANTS = {
    "gae": {"ppo.advantage": "gae"},
    "rloo": {"ppo.advantage": "rloo", GROUP: None},
    "grpo": {"ppo.advantage": "grpo", GROUP: None},
    "reinforce_pp": {"ppo.advantage": "reinforce_pp"},
    # Dr. GRPO: group mean only, and the constant normaliser (loss_aggregation resolves to it)
    "dr_grpo": {"ppo.advantage": "grpo", GROUP: None, "ppo.grpo_scale": False},
    # DAPO: clip-higher, token-mean loss, dynamic sampling, overlong masking, on GRPO
    "dapo": {
        "ppo.advantage": "grpo",
        GROUP: None,
        "ppo.cliprange_low": 0.2,
        "ppo.cliprange_high": 0.28,
        "ppo.filter_groups": True,
        "ppo.mask_truncated": True,
    },
    "grpo_filter_groups": {"ppo.advantage": "grpo", GROUP: None, "ppo.filter_groups": True},
    # GSPO: the length-normalised response ratio with its own clip range, on GRPO advantages
    "gspo": {"ppo.advantage": "grpo", GROUP: None, "ppo.importance_ratio": "sequence"},
    # TRL's RLOO: one unnormalised ratio per response
    "rloo_response_ratio": {
        "ppo.advantage": "rloo",
        GROUP: None,
        "ppo.importance_ratio": "sequence_unnormalised",
    },
}


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


def estimator_overrides(variant: str, k: int) -> dict:
    return {key: k if key == GROUP else value for key, value in VARIANTS[variant].items()}


def train_for(trainer: PPOTrainer, seconds: float, steps: int | None) -> tuple[int, float]:
    """``trainer.train()`` for ``seconds`` (or ``steps`` steps) after one warm-up step (the
    step running when they run out finishes): (timed steps done, seconds they took)."""
    clock = {"start": time.perf_counter(), "spent": 0.0}

    def stop_when_spent(step: int, stats: dict) -> None:
        now = time.perf_counter()
        if step == 1:  # warm-up done (first-call allocations, kernel selection): start timing
            clock["start"] = now
            return
        clock["spent"] = now - clock["start"]
        done = step - 1 >= steps if steps is not None else clock["spent"] >= seconds
        if done:
            trainer.request_stop()

    with contextlib.suppress(Interrupted):  # the budget ran out: train() checkpointed, stopped
        trainer.train(progress=stop_when_spent)
    return trainer.step_count - 1, clock["spent"]


def run_one(
    recipe: str, variant: str, base: dict, seconds: float, steps: int | None, k: int, folder: Path
) -> dict:
    overrides = base | estimator_overrides(variant, k) | {"ppo.steps": 100_000, "run.save_every": 0}
    config = load_config(recipe, [f"{key}={value}" for key, value in overrides.items()])
    run = RunDir.create(folder / variant, config.to_yaml())
    trainer = PPOTrainer(config, run_dir=run)
    done, spent = train_for(trainer, seconds, steps)
    summary = evaluate_run(run.path, trainer)
    metrics = {m["name"]: m for m in summary.metrics}
    shown = {name: metrics[name] for name in HEADLINE if name in metrics}
    return {"estimator": variant, "steps": done, "s_per_step": spent / max(done, 1)} | shown


def cell(metric: dict, percent: bool = False) -> str:
    scale, unit = (100.0, "%") if percent else (1.0, "")
    before, after = metric["before"]["mean"] * scale, metric["after"]["mean"] * scale
    low, high = (c * scale for c in metric["ci"])
    return f"{before:.3g}{unit} -> {after:.3g}{unit} [{low:+.3g}, {high:+.3g}]"


def print_table(recipe: str, rows: list[dict], budget: str) -> None:
    names = [name for name in HEADLINE if name in rows[0]]
    print(f"\n{recipe}, {budget} each; before -> after [95% CI of the change]\n")
    print("| variant | steps | s/step | " + " | ".join(HEADLINE[n][0] for n in names) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---" for _ in names) + " |")
    for r in rows:
        cells = [cell(r[name], percent=HEADLINE[name][1]) for name in names]
        print(f"| {r['estimator']} | {r['steps']} | {r['s_per_step']:.2f} | {' | '.join(cells)} |")


def main() -> None:
    enable_cpu_fast_paths()  # as the rewardtune command does: the timings measure what it runs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="smollm2-detox", help="shipped recipe or YAML path")
    parser.add_argument("--minutes", type=float, default=8.0, help="training wall time each")
    parser.add_argument("--k", type=int, default=4, help="samples per prompt of group variants")
    parser.add_argument("--estimators", default="gae,rloo,grpo", help=", ".join(VARIANTS))
    parser.add_argument("--steps", type=int, help="the same steps each, not the same time")
    parser.add_argument("--reward", choices=["recipe", "zero_one"], default="recipe")
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
        if args.reward == "zero_one":
            base["reward"] = ZERO_ONE
        base |= dict(item.split("=", 1) for item in args.set)
        seconds = 5.0 if args.smoke else args.minutes * 60
        rows = [
            run_one(args.recipe, name, base, seconds, args.steps, args.k, folder)
            for name in args.estimators.split(",")
        ]
    budget = f"{args.steps} steps" if args.steps else f"{seconds:.0f} s of training"
    print_table(args.recipe, rows, budget + (", 0/1 reward" if args.reward == "zero_one" else ""))


if __name__ == "__main__":
    main()
