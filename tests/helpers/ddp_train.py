"""Launched by tests with `accelerate launch --num_processes 2 --cpu`: trains, then records per-rank
facts (parameter checksum, per-step reward means of this rank's samples) for the test to compare."""

import json
import sys
from pathlib import Path

import torch

from rewardtune import PPOTrainer, load_config
from rewardtune.runs import RunDir


class LengthReward:
    name = "length"

    def __call__(self, prompts, responses):
        return [len(r) / 10 for r in responses]


def main(recipe: str, run_dir: str, out: str, *overrides: str) -> None:
    from rewardtune.rewards import WeightedReward

    config = load_config(recipe, list(overrides))
    trainer = PPOTrainer(config, reward=WeightedReward([(LengthReward(), 1.0)]))
    if trainer.accelerator.is_main_process:
        trainer.run = RunDir.create(Path(run_dir), config.to_yaml())
    trainer.accelerator.wait_for_everyone()
    local_means = []
    original_step = trainer.step

    def step(queries, responses, scores):
        local_means.append(float(torch.tensor(scores).mean()))
        return original_step(queries, responses, scores)

    trainer.step = step
    trainer.train()
    params = [
        p.detach().double().sum().item()
        for p in trainer.policy.module.parameters()
        if p.requires_grad
    ]
    facts = {
        "rank": trainer.accelerator.process_index,
        "checksum": params,
        "local_reward_means": local_means,
    }
    Path(f"{out}.{trainer.accelerator.process_index}.json").write_text(json.dumps(facts))


if __name__ == "__main__":
    main(*sys.argv[1:])
