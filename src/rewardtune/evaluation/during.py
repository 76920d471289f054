"""``eval.every``: a quick held-out evaluation during training, and ``run.keep_best``.

Every N steps the current policy answers the first ``eval.every_prompts`` held-out prompts
(drawn with the evaluation's seeds, the same each time); the mean of every score (the reward
and its terms, the extra scorers, toxicity) and the KL to the reference go to one line of
eval_history.jsonl. Under ``run.keep_best`` a better value of that metric replaces best/.
A resume truncates the history to the checkpoint's step and redoes the rest, so it is exact.
"""

from __future__ import annotations

import math

import numpy as np

from rewardtune.config import Config
from rewardtune.data.columns import column_lists
from rewardtune.distributed import full_parameters, gather_objects, strided_share
from rewardtune.evaluation.eval_sets import eval_sets
from rewardtune.evaluation.metrics import REWARD_TOTAL, TOXICITY
from rewardtune.evaluation.samples import Draw, reference_sums, sample
from rewardtune.evaluation.scoring import Scorers
from rewardtune.runs.checkpoints import rng_state, set_rng_state
from rewardtune.runs.rundir import BEST, EVAL_HISTORY, write_atomic
from rewardtune.types import RewardtuneError

KL = "kl"
LOWER_IS_BETTER = (TOXICITY, KL)


def history_keys(cfg: Config, scorers: Scorers) -> list[str]:
    """The metrics of one line of eval_history.jsonl, besides ``step``."""
    keys = [REWARD_TOTAL]
    if len(scorers.reward.terms) > 1:
        keys += [f"reward/{reward.name}" for reward, _ in scorers.reward.terms]
    keys += [TOXICITY] if scorers.toxicity is not None else []
    keys += [f"extra/{scorer.name}" for scorer, _ in scorers.extras]
    return [*keys, KL]


class PeriodicEval:
    """Called after each training step with the step count; evaluates every ``eval.every``
    steps (every rank samples its share) and keeps best/."""

    def __init__(self, trainer):
        cfg: Config = trainer.config
        self.trainer, self.every, self.keep_best = trainer, cfg.eval.every, cfg.run.keep_best
        policy = trainer.policy
        budget = policy.prompt_budget(cfg.eval.max_new_tokens)
        primary = eval_sets(cfg, policy.tokenizer, budget, cfg.eval.every_prompts)[0]
        self.prompts, self.draw = primary.prompts, Draw.of(cfg, primary.chat)
        self.scorers = Scorers.build(cfg.reward, cfg.eval)
        keys = history_keys(cfg, self.scorers)
        if self.keep_best and self.keep_best not in keys:
            raise RewardtuneError(
                f"run.keep_best: {self.keep_best!r} is not a metric of the evaluation during "
                f"training; choose one of {', '.join(keys)}"
            )

    def __call__(self, step: int) -> dict | None:
        """The history line of this step (on rank 0; None elsewhere, or when not due)."""
        if not self.every or step % self.every:
            return None
        trainer = self.trainer
        outer = rng_state()  # sampling seeds torch's RNG per batch: give the caller's back
        try:
            with full_parameters(trainer.accelerator, trainer.model):
                mine = self._score_share()
        finally:
            set_rng_state(outer)
        rows = gather_objects(trainer.accelerator, mine)
        line = None
        if trainer.run is not None:
            line = {"step": step - 1} | _means(rows)  # metrics.jsonl's step of the same update
        better = gather_objects(trainer.accelerator, [self._is_best(line)])[0]
        if trainer.run is not None:
            trainer.run.append(EVAL_HISTORY, [line])
        if better:
            folder = trainer.checkpoints.save_final(trainer.run, BEST)
            if folder is not None:
                best = {"step": step, "metric": self.keep_best, "value": line[self.keep_best]}
                write_atomic(folder / "best.json", _dumps(best))
        return line

    def _score_share(self) -> list[dict]:
        """This rank's samples: every score and the KL estimate log pi / pi_ref of each."""
        policy, state = self.trainer.policy, self.trainer.accelerator
        size = self.draw.batch_size
        batches = strided_share(
            math.ceil(len(self.prompts) / size), state.process_index, state.num_processes
        )
        index = [
            i for b in batches for i in range(b * size, min((b + 1) * size, len(self.prompts)))
        ]
        if not index:
            return []
        mine = [self.prompts[i] for i in index]
        was_training = policy.module.training
        policy.module.eval()
        drawn = sample(policy, policy.module.lm, self.prompts, self.draw, batches)
        kl = drawn.logprob_sums() - reference_sums(policy, mine, drawn)
        policy.module.train(was_training)
        scores = self.scorers.score([p.text for p in mine], drawn.texts, column_lists(mine))
        scores[KL] = kl.tolist()
        return [{name: values[j] for name, values in scores.items()} for j in range(len(mine))]

    def _is_best(self, line: dict | None) -> bool:
        """Whether ``line`` beats every earlier line of the history in ``run.keep_best``."""
        if not self.keep_best or line is None:
            return False
        earlier = [r[self.keep_best] for r in self.trainer.run.read(EVAL_HISTORY)]
        if not earlier:
            return True
        if self.keep_best in LOWER_IS_BETTER:
            return line[self.keep_best] < min(earlier)
        return line[self.keep_best] > max(earlier)


def _means(rows: list[dict]) -> dict:
    return {name: float(np.mean([r[name] for r in rows])) for name in rows[0]}


def _dumps(data: dict) -> str:
    import json

    return json.dumps(data, indent=2) + "\n"
