"""Checkpoints, in one place: what a checkpoint and ``final/`` hold, how they are written and
read back, and when a trainer saves (``TrainerCheckpoints``).

Every file name inside a checkpoint lives here. A checkpoint folder (``checkpoints/step-N``):

    weights.safetensors        the LM weights that train (adapter, or full model)
    value_head.safetensors     the value head (only when it trains: ppo.advantage gae)
    optimizer.pt               the optimizer (``optimizer-rankR.pt`` per rank under ZeRO/FSDP)
    rng_state.pt               python / numpy / torch / cuda RNG states of the classic
                               loop's stream (train() seeds each step from (seed, step, rank))
    trainer_state.json         step, KL coefficient, world size; written last

``final/`` is a folder transformers/peft load (adapter or full weights + tokenizer), plus the
value head (when it trained) and ``rewardtune_model.json`` (how to rebuild the base of an adapter). Folder-level
atomicity (temp folder + rename) is ``RunDir``'s.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rewardtune import distributed
from rewardtune.config import RunConfig
from rewardtune.distributed import any_rank
from rewardtune.models.hub import save_hf_folder
from rewardtune.models.policy import Policy
from rewardtune.models.weights import (
    load_trainable_state_dict,
    split_policy_state,
    trainable_state_dict,
    untie,
    value_head_state,
)
from rewardtune.runs.rundir import CHECKPOINTS, FINAL, STATE, RunDir, read_state
from rewardtune.types import RewardtuneError

WEIGHTS = "weights.safetensors"
VALUE_HEAD = "value_head.safetensors"
RNG = "rng_state.pt"
MODEL_INFO = "rewardtune_model.json"


def optimizer_file(rank: int) -> str:
    """Rank 0's optimizer state, or rank R's shard under ZeRO/FSDP."""
    return "optimizer.pt" if rank == 0 else f"optimizer-rank{rank}.pt"


@dataclass
class TrainerState:
    """The loop's own state in ``trainer_state.json``."""

    step: int
    kl_coef: float
    world_size: int = 1


def write_checkpoint(
    folder: Path,
    policy: Policy,
    state: dict[str, torch.Tensor],
    optimizer_state: dict,
    trainer_state: TrainerState,
    shards: Path | None = None,
    value_head: bool = True,
) -> None:
    """Everything to resume from, into ``folder`` (a temporary folder ``RunDir`` renames).

    ``state`` is the whole policy's state dict (gathered from shards when sharded);
    ``shards`` a folder of other ranks' optimizer shards to move in; ``value_head=False``
    (a critic-free estimator) leaves the untrained value head out.
    """
    lm_state, head_state = split_policy_state(state)
    weights = {
        k: v.detach().contiguous().cpu() for k, v in trainable_state_dict(policy, lm_state).items()
    }
    head = value_head_state(policy, head_state)
    check_finite_weights(weights | head, f"step {trainer_state.step}")
    save_file(untie(weights), str(folder / WEIGHTS))
    if value_head:
        save_file(head, str(folder / VALUE_HEAD))
    torch.save(optimizer_state, folder / optimizer_file(0))
    if shards is not None:
        for shard in shards.glob("optimizer-rank*.pt"):
            shutil.move(str(shard), folder / shard.name)
        shutil.rmtree(shards, ignore_errors=True)
    torch.save(rng_state(), folder / RNG)
    (folder / STATE).write_text(json.dumps(trainer_state.__dict__, indent=2))


def check_finite_weights(state: dict[str, torch.Tensor], when: str) -> None:
    """A NaN/Inf weight never reaches a checkpoint: the save stops, the last good one stays."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise RewardtuneError(
                f"{when}: weight {name} became NaN/Inf, so it was not saved; the last good "
                "checkpoint is kept; lower ppo.learning_rate or check the reward's scale"
            )


RESUME_FILES = (WEIGHTS, optimizer_file(0), RNG, STATE)
EVAL_FILES = (WEIGHTS, STATE)  # + the value head wherever one was saved (GAE runs)


def checkpoint_problem(folder: Path, files: tuple[str, ...] = RESUME_FILES) -> str | None:
    """What is wrong with a checkpoint's files (missing, truncated), or None; reads headers
    only, so a check costs milliseconds whatever the model's size. The value head is checked
    where it exists: critic-free runs save none."""
    optional = (VALUE_HEAD,) if (folder / VALUE_HEAD).exists() else ()
    for name in (*files, *optional):
        path = folder / name
        if not path.is_file():
            return f"is missing {name}"
        try:
            if name.endswith(".safetensors"):
                with safe_open(str(path), "pt") as f:
                    f.keys()
            elif name.endswith(".pt"):
                zipfile.ZipFile(path).close()  # torch.save writes a zip; a cut one has no index
            else:
                read_state(folder)
        except Exception as err:  # safetensors, zipfile and json each raise their own
            return f"has a damaged {name} ({str(err).splitlines()[0][:120]})"
    return None


def usable_checkpoint(run: RunDir) -> Path:
    """The newest complete checkpoint whose files are whole; an older one, with a warning,
    when the newest is damaged; a RewardtuneError naming the file when none is left."""
    complete = run.checkpoints()
    if not complete:
        return run.checkpoint_dir()  # raises: nothing to resume from
    problems = []
    for folder in reversed(complete):
        problem = checkpoint_problem(folder)
        if problem is None:
            if problems and os.environ.get("RANK", "0") == "0":  # one warning, not one a rank
                logging.getLogger(__name__).warning(
                    f"checkpoint {problems[0]}; resuming from the previous one, {folder.name}"
                )
            return folder
        problems.append(f"{folder} {problem}")
    raise RewardtuneError(
        f"checkpoint {problems[0]}, and no older complete checkpoint is left; delete it, or "
        "start over with --overwrite"
    )


def read_checkpoint(
    folder: Path, policy: Policy, optimizer, rank: int, world: int, value_head: bool = True
) -> TrainerState:
    """Restore weights, value head (``value_head``: the run trains one), optimizer (this
    rank's file) and RNG from ``folder``.

    A missing or unreadable file, or another world size, is a ``RewardtuneError`` naming it.
    """
    optimizer_name = optimizer_file(rank)
    needed = (
        (WEIGHTS, VALUE_HEAD, optimizer_name, STATE)
        if value_head
        else (WEIGHTS, optimizer_name, STATE)
    )
    for name in needed:
        if not (folder / name).is_file():
            raise RewardtuneError(
                f"checkpoint {folder} is missing {name}; delete it to resume from an older one"
            )
    state = read_state(folder)
    saved_world = state.get("world_size", 1)
    if saved_world != world:
        raise RewardtuneError(
            f"checkpoint {folder} was written by {saved_world} process(es); resume with the "
            f"same number (now {world}): rewardtune train --processes {saved_world} --resume ..."
        )
    try:
        load_trainable_state_dict(
            policy, load_file(str(folder / WEIGHTS), device=str(policy.device)), str(folder)
        )
        if value_head:
            load_value_head(policy, folder)
        optimizer.load_state_dict(
            torch.load(folder / optimizer_name, weights_only=True, map_location="cpu")
        )
        set_rng_state(torch.load(folder / RNG, weights_only=True))
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        raise RewardtuneError(
            f"checkpoint {folder} is unreadable: {str(err).splitlines()[0][:200]}"
        ) from err
    return TrainerState(int(state["step"]), float(state["kl_coef"]), saved_world)


def write_final(
    folder: Path,
    policy: Policy,
    state: dict[str, torch.Tensor] | None = None,
    value_head: bool = True,
) -> None:
    """A folder transformers/peft load: the adapter (or full model), tokenizer, value head
    (unless ``value_head=False``: it never trained). ``state`` is the whole policy's state
    dict when it was gathered from shards."""
    folder.mkdir(parents=True, exist_ok=True)
    lm_state, head_state = split_policy_state(state) if state is not None else (None, None)
    head = value_head_state(policy, head_state)
    trained = trainable_state_dict(policy, lm_state)
    check_finite_weights(trained | head, "final")
    save_hf_folder(policy.module.lm, policy.tokenizer, folder, lm_state)
    if value_head:
        save_file(head, str(folder / VALUE_HEAD))
    info = {
        "base": policy.config.name,
        "source": policy.source.path,
        "gguf_file": policy.source.gguf_file,
        "seq2seq": policy.seq2seq,
        "adapter": policy.module.has_adapter,
    }
    (folder / MODEL_INFO).write_text(json.dumps(info, indent=2))


def load_value_head(policy: Policy, folder: Path) -> None:
    state = load_file(str(folder / VALUE_HEAD), device=str(policy.device))
    policy.module.v_head.load_state_dict(state)


def load_trained_weights(policy: Policy, folder: Path) -> None:
    """Put trained LM weights into a freshly loaded policy: from a checkpoint
    (weights.safetensors), a final/ adapter (adapter_model.safetensors) or full weights."""
    folder = Path(folder)
    device = str(policy.device)
    if (folder / WEIGHTS).is_file():
        state = load_file(str(folder / WEIGHTS), device=device)
    elif (folder / "adapter_model.safetensors").is_file() and policy.module.has_adapter:
        state = load_file(str(folder / "adapter_model.safetensors"), device=device)
    elif sorted(folder.glob("model*.safetensors")) and not policy.module.has_adapter:
        state = {}
        for shard in sorted(folder.glob("model*.safetensors")):
            state |= load_file(str(shard), device=device)
    else:
        raise RewardtuneError(f"{folder} holds no trained weights this run's model can load")
    load_trainable_state_dict(policy, state, str(folder))
    if (folder / VALUE_HEAD).is_file():
        load_value_head(policy, folder)


def rng_state() -> dict:
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": json.dumps(np_state, default=lambda a: a.tolist()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np_state = json.loads(state["numpy"])
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- a trainer's saves: gathering, optimizer shards, run.save_every* ------------------


class TrainerCheckpoints:
    """When and how one trainer saves and resumes its model and optimizer: every rank gathers
    its part, rank 0 writes the files above.

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
                lambda folder: write_checkpoint(
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
            torch.save(self.optimizer.state_dict(), staging / optimizer_file(rank))
        self.accelerator.wait_for_everyone()
        return staging

    def load(self, folder: Path) -> TrainerState:
        """Restore everything ``save`` wrote (a missing file says which)."""
        sharded = distributed.optimizer_is_sharded(self.accelerator)
        rank = self.accelerator.process_index if sharded else 0
        with distributed.whole_tensors_into_shards(self.accelerator, self.model):
            return read_checkpoint(
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
                lambda folder: write_final(
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
