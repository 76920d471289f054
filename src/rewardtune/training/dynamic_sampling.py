"""DAPO's dynamic sampling (``ppo.filter_groups``; Yu et al. 2025, "DAPO", section 3.2 and
eq. 11): a group whose k responses all score alike has advantage 0 under a group baseline and
carries no gradient, so it is dropped and more prompts are drawn until the batch is full.

Every draw is a pure function of (seed, step, draw, rank), so a resumed run draws exactly what
the straight run drew. Each process fills its own share; all processes draw the same number
of rounds and train on the same number of groups (the smallest share any of them filled), so
their minibatches stay in step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rewardtune.core.advantages import tied_groups
from rewardtune.training.rng import seed_step
from rewardtune.types import GroupFilterStats, PromptBatch


@dataclass
class Drawn:
    """One draw of one process: prompts (k in a row per group), responses, texts, scores."""

    batch: PromptBatch
    responses: list[torch.Tensor]
    texts: list[str]
    scores: list[float]

    def rows(self, keep: list[int]) -> Drawn:
        """The rows ``keep``, in that order."""
        return Drawn(
            PromptBatch(
                query=[self.batch.query[i] for i in keep],
                input_ids=[self.batch.input_ids[i] for i in keep],
            ),
            [self.responses[i] for i in keep],
            [self.texts[i] for i in keep],
            [self.scores[i] for i in keep],
        )

    @staticmethod
    def concat(parts: list[Drawn]) -> Drawn:
        return Drawn(
            PromptBatch(
                query=[q for p in parts for q in p.batch.query],
                input_ids=[q for p in parts for q in p.batch.input_ids],
            ),
            [r for p in parts for r in p.responses],
            [t for p in parts for t in p.texts],
            [s for p in parts for s in p.scores],
        )


def signal_rows(scores: list[float], k: int) -> list[int]:
    """The rows of the groups whose scores are not all equal, in order."""
    tied = tied_groups(torch.tensor(scores, dtype=torch.float64), k).tolist()
    return [g * k + j for g, is_tied in enumerate(tied) if not is_tied for j in range(k)]


def _over_processes(accelerator, values: list[float], reduce: str) -> list[float]:
    """Each of ``values`` summed (``sum``) or minimised (``min``) over every process."""
    local = torch.tensor([values], dtype=torch.float64, device=accelerator.device)
    gathered = accelerator.gather(local) if accelerator.num_processes > 1 else local
    out = gathered.sum(0) if reduce == "sum" else gathered.min(0).values
    return out.tolist()


def sample_groups_with_signal(
    draw: Callable[[int], Drawn],
    accelerator,
    k: int,
    groups_per_process: int,
    max_resample_rounds: int,
) -> tuple[Drawn, GroupFilterStats]:
    """Draw (``draw(0)``: the step's own prompts; ``draw(r)``: round r's extra prompts) until
    every process holds ``groups_per_process`` groups with signal, or ``max_resample_rounds``
    extra rounds are spent; then every process trains on the first ``n`` of its groups, ``n``
    the smallest share any process filled. When no process found a group with signal the step
    trains on its own prompts as drawn (each tied group's advantage is 0 but for the KL)."""
    kept: list[Drawn] = []
    first: Drawn | None = None
    drawn = tied = 0
    extra_seconds, fewest = 0.0, 0.0
    for rounds in range(max_resample_rounds + 1):
        start = time.perf_counter()
        sample = draw(rounds)
        if first is None:
            first = sample
        rows = signal_rows(sample.scores, k)
        kept.append(sample.rows(rows))
        drawn, tied = drawn + len(sample.scores) // k, tied + (len(sample.scores) - len(rows)) // k
        if rounds:
            extra_seconds += time.perf_counter() - start
        have = sum(len(part.scores) for part in kept) // k
        (fewest,) = _over_processes(accelerator, [min(have, groups_per_process)], "min")
        if fewest >= groups_per_process:
            break
    n = int(fewest)
    batch = Drawn.concat(kept).rows(list(range(n * k))) if n else first
    total_drawn, total_tied = _over_processes(accelerator, [drawn, tied], "sum")
    stats = GroupFilterStats(
        filtered_groups=total_tied / total_drawn,
        batch_fill=n / groups_per_process,
        resample_rounds=rounds,
        time_resample=extra_seconds,
    )
    return batch, stats


def sample_step_batch(trainer, step: int) -> tuple[Drawn, GroupFilterStats | None]:
    """``train()``'s prompts of ``step``, sampled and scored; under ``ppo.filter_groups`` the
    groups that tie are dropped and more prompts drawn (``sample_groups_with_signal``)."""
    ppo = trainer.ppo
    if not ppo.filter_groups:
        return draw_batch(trainer, step, 0), None
    k = ppo.samples_per_prompt
    return sample_groups_with_signal(
        lambda draw: draw_batch(trainer, step, draw),
        trainer.accelerator,
        k,
        ppo.batch_size // k // trainer.world,
        ppo.max_resample_rounds,
    )


def draw_batch(trainer, step: int, draw: int) -> Drawn:
    """Draw ``draw`` of ``step``: its prompts, sampling seeded from (seed, step, draw, rank),
    texts and rewards (their seconds added to the trainer's timer)."""
    batch = trainer.batch_for_step(step, draw)
    seed_step(trainer.ppo.seed, step, trainer.rank + draw * trainer.world)
    responses = trainer.generate(batch.input_ids)
    texts = trainer.decode(responses)
    start = time.perf_counter()
    scores = trainer.reward(batch.query, texts)
    trainer.timer.add("reward", time.perf_counter() - start)
    return Drawn(batch, responses, texts, scores)
