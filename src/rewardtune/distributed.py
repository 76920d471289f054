"""Everything several processes need from accelerate (and DeepSpeed/FSDP), in one place.

`accelerate launch [--num_processes N] -m rewardtune train RECIPE` starts N copies of the
trainer. Each takes a disjoint share of every global batch; gradients are averaged by the
engine (DDP, FSDP or DeepSpeed, chosen by accelerate's config); stats are reduced across
processes; rank 0 alone writes the run directory. This module holds the pieces of that
which touch accelerate/DeepSpeed/FSDP APIs, so a library change touches one file.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence

import torch

from rewardtune.types import RewardtuneError

log = logging.getLogger("rewardtune")


def make_accelerator(trackers: list[str] | None = None, project_dir: str | None = None):
    """The one ``Accelerator`` of a process: CPU when there is no CUDA; ``trackers``
    (tensorboard, wandb) are started later by ``start_trackers``, once the run directory
    exists (TensorBoard writes into it)."""
    from accelerate import Accelerator

    return Accelerator(
        cpu=not torch.cuda.is_available(), log_with=trackers or None, project_dir=project_dir
    )


def start_trackers(accelerator, config: dict, run_dir: str) -> None:
    """Open the trackers asked for with the flattened ``config``: TensorBoard event files in
    ``RUN_DIR/rewardtune/``, the W&B run folder in ``RUN_DIR/wandb/`` (WANDB_MODE=offline
    works)."""
    if accelerator.log_with:
        kwargs = {"wandb": {"dir": run_dir}}
        accelerator.init_trackers("rewardtune", config=config, init_kwargs=kwargs)


def log_table(accelerator, name: str, columns: list[str], rows: list[list], step: int) -> None:
    """A table of samples for one step, as classic TRL logged it: a W&B ``Table``, and
    TensorBoard text (a Markdown table). Only the main process holds trackers."""
    if not accelerator.is_main_process:
        return
    for tracker in accelerator.trackers:
        if tracker.name == "wandb":
            tracker.log_table(name, columns=columns, data=rows, step=step)
        elif tracker.name == "tensorboard":
            tracker.writer.add_text(name, _markdown_table(columns, rows), global_step=step)
            tracker.writer.flush()


def _markdown_table(columns: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return " ".join(str(value).replace("|", "\\|").split())

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def end(accelerator) -> None:
    """End the trackers, then leave the process group: a gloo/NCCL thread still alive when the
    interpreter exits can abort it ("terminate called without an active exception")."""
    accelerator.end_training()
    if accelerator.num_processes > 1 and torch.distributed.is_initialized():
        accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """This process's (rank, world size) as accelerate set them up; (0, 1) while no
    ``Accelerator`` or ``PartialState`` exists in this process (no process group to leave)."""
    from accelerate import PartialState

    if not PartialState._shared_state:
        return 0, 1
    state = PartialState()
    return state.process_index, state.num_processes


def process_state():
    """This process's rank, world size and device, without building an ``Accelerator``."""
    from accelerate import PartialState

    return PartialState()


def check_divisible(batch_size: int, mini_batch_size: int, world: int, group: int = 1) -> None:
    """``ppo.batch_size`` and ``ppo.mini_batch_size`` are global: each process takes 1/world,
    and its share holds whole groups of ``group`` (``ppo.samples_per_prompt``) responses."""
    if batch_size % world or mini_batch_size % world:
        raise RewardtuneError(
            f"ppo.batch_size ({batch_size}) and ppo.mini_batch_size ({mini_batch_size}) are "
            f"global and must divide by the {world} processes; set them to multiples of {world}"
        )
    if (batch_size // world) % group:
        raise RewardtuneError(
            f"each of the {world} processes takes {batch_size // world} of ppo.batch_size "
            f"({batch_size}), which must hold whole groups of ppo.samples_per_prompt ({group}); "
            f"set ppo.batch_size to a multiple of {world * group}"
        )


def contiguous_share(items: Sequence, rank: int, world: int) -> list:
    """This rank's contiguous slice of ``items`` (len divisible by world): rank r gets the
    r-th of ``world`` equal parts, so the gathered results come back in the original order."""
    share = len(items) // world
    return list(items[rank * share : (rank + 1) * share])


def strided_share(n: int, rank: int, world: int) -> list[int]:
    """Indices ``rank, rank + world, ...`` below ``n``: an uneven count splits within one."""
    return list(range(rank, n, world))


def gather_objects(accelerator, items: list) -> list:
    """Every process's list, concatenated in rank order, on every process."""
    if accelerator.num_processes == 1:
        return list(items)
    from accelerate.utils import gather_object

    return gather_object(items)


def global_mean(accelerator, values: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """Mean over every process's values, leaving out those where ``valid`` is False."""
    device = accelerator.device
    values = values.detach().float().reshape(-1).to(device)
    keep = torch.ones_like(values) if valid is None else valid.reshape(-1).to(values)
    totals = torch.stack([torch.where(keep > 0, values, 0.0).sum(), keep.sum()])
    if accelerator.num_processes > 1:
        totals = accelerator.gather(totals.reshape(1, 2)).sum(0)
    return float(totals[0] / totals[1]) if totals[1] > 0 else 0.0


def any_rank(accelerator, flag: bool) -> bool:
    """True on every process when it is true on any: a stop that reached one process
    (a signal sent to one pid) must stop all of them at the same step."""
    if accelerator.num_processes == 1:
        return flag
    return global_mean(accelerator, torch.tensor([float(flag)])) > 0


def parameters_are_sharded(accelerator) -> bool:
    """FSDP and ZeRO-3 keep only a shard of each parameter on each process."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    return (
        accelerator.distributed_type == DistributedType.DEEPSPEED and _zero_stage(accelerator) == 3
    )


def _zero_stage(accelerator) -> int:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return int(getattr(plugin, "zero_stage", 0) or 0)


def prepare_engine(accelerator, micro_batch_size: int) -> None:
    """DeepSpeed sizes its buffers from a micro batch that accelerate reads off a
    dataloader; PPO has none, so give it the per-process mini-batch."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        config = accelerator.state.deepspeed_plugin.deepspeed_config
        config["train_micro_batch_size_per_gpu"] = micro_batch_size
        config.setdefault("gradient_accumulation_steps", 1)


@contextlib.contextmanager
def full_parameters(accelerator, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The unwrapped module with whole parameters, for sampling and scoring forwards that
    run outside the engine (generate, the reference). DDP and one process: unwrap only.

    ZeRO-3 gathers the shards with DeepSpeed's own ``unwrap_model_for_generation``; FSDP
    with ``summon_full_params`` (read-only). Both hold the whole model on every process
    while inside, which is what a rollout needs anyway.
    """
    from accelerate.utils import DistributedType

    if not parameters_are_sharded(accelerator):
        yield accelerator.unwrap_model(model)
    elif accelerator.distributed_type == DistributedType.DEEPSPEED:
        from deepspeed.runtime.zero import unwrap_model_for_generation

        with unwrap_model_for_generation(model) as unwrapped:
            yield unwrapped
    else:
        from torch.distributed.fsdp import FullyShardedDataParallel

        with FullyShardedDataParallel.summon_full_params(model, writeback=False, recurse=True):
            yield accelerator.unwrap_model(model)


def full_state_dict(accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole (unwrapped) module's state dict; a collective under FSDP/ZeRO-3, where only
    rank 0's copy is complete. Call it on every process."""
    return accelerator.get_state_dict(model, unwrap=True)


def optimizer_is_sharded(accelerator) -> bool:
    """ZeRO (any stage) and FSDP split the optimizer state; DDP replicates it."""
    from accelerate.utils import DistributedType

    return accelerator.num_processes > 1 and accelerator.distributed_type in (
        DistributedType.FSDP,
        DistributedType.DEEPSPEED,
    )


# --- `rewardtune train --processes N`: accelerate's launcher, with our error contract ------


def launch_arguments(processes: int) -> list[str]:
    """``accelerate launch`` options for ``processes`` local processes, GPUs or CPU alike:
    torchrun underneath (accelerate's --cpu flag would start one process), every default
    spelled out (no warnings), and a free port (two runs on one machine must not collide)."""
    return [
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
    ]


def launch(processes: int, argv: list[str]) -> int:
    """Run ``python -m rewardtune ARGV`` as ``processes`` local processes through accelerate's
    launcher (torchrun underneath: NCCL on GPUs, gloo on a CPU-only machine).

    Returns the exit code: 0, or the first failed process's own code (2 for a user mistake,
    whose one-line message that process has printed already), without the launcher's report.
    """
    import torch.distributed.elastic.multiprocessing.errors as elastic_errors
    from accelerate.commands.launch import launch_command, launch_command_parser

    for name in ("torch.distributed.elastic", "accelerate"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    args = launch_command_parser().parse_args(
        [*launch_arguments(processes), "-m", "rewardtune", *argv]
    )
    try:
        launch_command(args)
    except elastic_errors.ChildFailedError as err:
        codes = [f.exitcode for f in err.failures.values()]
        return next((c for c in codes if c > 0), 1)
    return 0


def strip_option(argv: list[str], option: str) -> list[str]:
    """``argv`` without ``option VALUE`` / ``option=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def cli_argv() -> list[str]:
    """The arguments this process was started with, after ``python -m rewardtune``."""
    return list(sys.argv[1:])
