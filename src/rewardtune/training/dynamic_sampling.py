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
from rewardtune.rewards import Scores
from rewardtune.sampling.rollout import Generation
from rewardtune.types import GroupFilterStats, PromptBatch


@dataclass
class Drawn:
    """One draw of one process: prompts (k in a row per group), their sampled responses, texts
    and scores, and the seconds scoring took."""

    batch: PromptBatch
    generation: Generation
    texts: list[str]
    scores: Scores
    reward_seconds: float

    def rows(self, keep: list[int]) -> Drawn:
        """The rows ``keep``, in that order."""

        def pick(values):
            return None if values is None else [values[i] for i in keep]

        generation = self.generation
        return Drawn(
            PromptBatch(
                query=pick(self.batch.query),
                input_ids=pick(self.batch.input_ids),
                columns={name: pick(v) for name, v in self.batch.columns.items()},
            ),
            Generation(
                pick(generation.responses),
                pick(generation.logprobs),
                pick(generation.values),
                generation.seconds,
            ),
            pick(self.texts),
            Scores(pick(self.scores.total), {n: pick(v) for n, v in self.scores.terms.items()}),
            self.reward_seconds,
        )

    @staticmethod
    def concat(parts: list[Drawn]) -> Drawn:
        """The draws one after the other; their seconds add up."""

        def joined(lists):
            return None if any(x is None for x in lists) else [v for x in lists for v in x]

        generations = [p.generation for p in parts]
        terms = parts[0].scores.terms
        return Drawn(
            PromptBatch(
                query=joined([p.batch.query for p in parts]),
                input_ids=joined([p.batch.input_ids for p in parts]),
                columns={
                    name: joined([p.batch.columns[name] for p in parts])
                    for name in parts[0].batch.columns
                },
            ),
            Generation(
                joined([g.responses for g in generations]),
                joined([g.logprobs for g in generations]),
                joined([g.values for g in generations]),
                sum(g.seconds for g in generations),
            ),
            joined([p.texts for p in parts]),
            Scores(
                joined([p.scores.total for p in parts]),
                {name: joined([p.scores.terms[name] for p in parts]) for name in terms},
            ),
            sum(p.reward_seconds for p in parts),
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
        rows = signal_rows(sample.scores.total, k)
        kept.append(sample.rows(rows))
        n_rows = len(sample.texts)
        drawn, tied = drawn + n_rows // k, tied + (n_rows - len(rows)) // k
        if rounds:
            extra_seconds += time.perf_counter() - start
        have = sum(len(part.texts) for part in kept) // k
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
