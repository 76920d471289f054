"""When and how a trainer saves: every rank gathers its part, rank 0 writes through
``runs/checkpoint.py`` (which owns every file name and the format)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from rewardtune import distributed
from rewardtune.config import RunConfig
from rewardtune.models.policy import Policy
from rewardtune.runs import checkpoint
from rewardtune.runs.checkpoint import TrainerState
from rewardtune.runs.rundir import CHECKPOINTS, FINAL, RunDir
from rewardtune.training.collective import any_rank


class Checkpoints:
    """Save, resume and the final save of one trainer's model and optimizer.

    ``value_head=False`` (a critic-free estimator) leaves the untrained value head out.
    """

    def __init__(
        self, accelerator, model, optimizer, policy: Policy, run: RunConfig, value_head: bool
    ):
        self.accelerator, self.model, self.optimizer = accelerator, model, optimizer
        self.policy, self.run_config, self.value_head = policy, run, value_head
        self.last_save, self.saved_step = time.monotonic(), None  # run.save_every_minutes

    def save(self, run: RunDir | None, run_path: Path | None, state: TrainerState) -> Path | None:
        """Adapter/weights + value head (safetensors), optimizer, KL controller, step, RNG.

        Every rank takes part (gathering sharded weights is a collective); rank 0 (the one
        with a ``run``) writes.
        """
        self.accelerator.wait_for_everyone()
        weights = distributed.full_state_dict(self.accelerator, self.model)
        shards = self._stage_optimizer_shards(run_path, state.step)
        path = None
        if run is not None:
            optimizer_state = self.optimizer.state_dict()
            path = run.save_checkpoint(
                state.step,
                lambda folder: checkpoint.write_checkpoint(
                    folder,
                    self.policy,
                    weights,
                    optimizer_state,
                    state,
                    shards,
                    value_head=self.value_head,
                ),
                self.run_config.keep_checkpoints,
            )
        # every rank waits here: a rank that ran ahead would pair its next collective
        # (DDP's buffer broadcast) with this barrier and hang both
        self.accelerator.wait_for_everyone()
        self.last_save, self.saved_step = time.monotonic(), state.step
        return path

    def _stage_optimizer_shards(self, run_path: Path | None, step: int) -> Path | None:
        """Under ZeRO/FSDP each rank holds its own optimizer shard: ranks > 0 write theirs
        beside the checkpoint, and rank 0 moves them in before the checkpoint is renamed
        into place (so a complete checkpoint always has every shard)."""
        if not distributed.optimizer_is_sharded(self.accelerator) or run_path is None:
            return None
        staging = run_path / CHECKPOINTS / f".shards-step-{step}"
        rank = self.accelerator.process_index
        if rank > 0:
            staging.mkdir(parents=True, exist_ok=True)
            torch.save(self.optimizer.state_dict(), staging / checkpoint.optimizer_file(rank))
        self.accelerator.wait_for_everyone()
        return staging

    def load(self, folder: Path) -> TrainerState:
        """Restore everything ``save`` wrote (a missing file says which)."""
        sharded = distributed.optimizer_is_sharded(self.accelerator)
        rank = self.accelerator.process_index if sharded else 0
        return checkpoint.read_checkpoint(
            folder,
            self.policy,
            self.optimizer,
            rank,
            self.accelerator.num_processes,
            self.value_head,
        )

    def save_final(self, run: RunDir | None, name: str = FINAL) -> Path | None:
        """The final model folder (``final/``, or ``best/``), written by rank 0 from the
        gathered weights."""
        self.accelerator.wait_for_everyone()
        weights = distributed.full_state_dict(self.accelerator, self.model)
        path = None
        if run is not None:
            path = run.save_final(
                lambda folder: checkpoint.write_final(
                    folder, self.policy, weights, value_head=self.value_head
                ),
                name,
            )
        self.accelerator.wait_for_everyone()
        return path

    def due(self, step: int) -> bool:
        """Every ``run.save_every`` steps, or once ``run.save_every_minutes`` have passed since
        the last save, whichever comes first; every rank takes the same decision."""
        run = self.run_config
        by_steps = bool(run.save_every) and step % run.save_every == 0
        elapsed = time.monotonic() - self.last_save
        by_time = bool(run.save_every_minutes) and elapsed >= run.save_every_minutes * 60
        return any_rank(self.accelerator, by_steps or by_time)
