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
import os
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

    cpu = not torch.cuda.is_available()
    # accelerate refuses its FSDP plugin on CPU; there rewardtune applies FSDP2 itself
    # (``prepare``), so the plugin is kept out of the Accelerator
    with _without_env("ACCELERATE_USE_FSDP") if cpu else contextlib.nullcontext():
        return Accelerator(cpu=cpu, log_with=trackers or None, project_dir=project_dir)


@contextlib.contextmanager
def _without_env(name: str) -> Iterator[None]:
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


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


def check_engine(accelerator, quantization: str) -> None:
    """Refuse, before any model loads, what the engine chosen by accelerate's config cannot
    run: 4/8-bit weights under FSDP or ZeRO-3, which shard float parameters (bitsandbytes
    packs its weights into uint8 on each process's own GPU)."""
    if quantization != "none" and parameters_are_sharded(accelerator):
        raise RewardtuneError(
            f"model.quantization: {quantization} cannot be sharded by FSDP or ZeRO-3 "
            "(bitsandbytes' packed weights stay whole on each GPU); use DDP "
            "(configs/accelerate/ddp.yaml) or ZeRO-2, or set model.quantization: none"
        )


def fsdp_on_cpu(accelerator) -> bool:
    """accelerate's config asks for FSDP (``--use_fsdp``, configs/accelerate/fsdp.yaml) and
    the processes run on CPU, where accelerate applies no FSDP (it would run DDP): rewardtune
    shards the policy with PyTorch's FSDP2 ``fully_shard`` itself, over gloo."""
    return (
        os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
        and accelerator.device.type == "cpu"
        and accelerator.num_processes > 1
    )


def prepare(accelerator, module: torch.nn.Module, make_optimizer):
    """(model, optimizer) for this process: the engine's wrappers (DDP, ZeRO, FSDP on GPUs,
    by accelerate), or FSDP2 on CPU processes. ``make_optimizer(module)`` builds the optimizer
    once the parameters are the ones that train (FSDP2 replaces them by their shards)."""
    if not fsdp_on_cpu(accelerator):
        return accelerator.prepare(module, make_optimizer(module))
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (accelerator.num_processes,))
    layers = set(getattr(module.lm, "_no_split_modules", None) or [])
    for sub in list(module.modules()):
        if type(sub).__name__ in layers:  # one unit per decoder layer, as accelerate wraps
            fully_shard(sub, mesh=mesh)
    fully_shard(module, mesh=mesh)
    # FSDP2 initialises itself on the root's first forward; sampling calls the LM (a child
    # unit) first, so initialise from the root now (no public call does it)
    module._get_fsdp_state()._lazy_init()
    return module, make_optimizer(module)


def _fsdp2_units(model: torch.nn.Module) -> list:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def whole_tensors_into_shards(accelerator, model: torch.nn.Module) -> Iterator[None]:
    """A block that loads saved (whole) tensors into ``model`` with ``load_state_dict``: under
    FSDP2 on CPU each process cuts its own shard out of each tensor (all hold the same file)."""
    if not fsdp_on_cpu(accelerator):
        yield
        return
    from torch.distributed.tensor import DTensor, distribute_tensor

    def to_shards(module, state, prefix, *args):
        for name, param in module.named_parameters(recurse=False):
            value = state.get(prefix + name)
            if isinstance(param, DTensor) and value is not None and not isinstance(value, DTensor):
                state[prefix + name] = distribute_tensor(
                    value.to(param.dtype), param.device_mesh, param.placements, src_data_rank=None
                )

    handles = [
        m._register_load_state_dict_pre_hook(to_shards, with_module=True) for m in model.modules()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def whole_tensor(value):
    """A tensor, whole: FSDP2 hands some (a gradient norm) back as a DTensor."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value


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


def all_reduce_sum(accelerator):
    """A function that sums a tensor over every process (None with one process: nothing to
    sum), for core functions that need whole-batch moments."""
    if accelerator.num_processes == 1:
        return None

    def total(values: torch.Tensor) -> torch.Tensor:
        gathered = accelerator.gather(values.contiguous().to(accelerator.device)[None])
        return gathered.sum(0).to(values.device)

    return total


def any_rank(accelerator, flag: bool) -> bool:
    """True on every process when it is true on any: a stop that reached one process
    (a signal sent to one pid) must stop all of them at the same step."""
    if accelerator.num_processes == 1:
        return flag
    return global_mean(accelerator, torch.tensor([float(flag)])) > 0


def parameters_are_sharded(accelerator) -> bool:
    """FSDP and ZeRO-3 keep only a shard of each parameter on each process."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP or fsdp_on_cpu(accelerator):
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
    with ``summon_full_params`` (read-only), FSDP2 with each unit's ``unshard``. Both hold the whole model on every process
    while inside, which is what a rollout needs anyway.
    """
    from accelerate.utils import DistributedType

    if not parameters_are_sharded(accelerator):
        yield accelerator.unwrap_model(model)
    elif units := _fsdp2_units(model):
        # FSDP2: gather every unit once and keep it whole for the block (no reshard after
        # each forward), then back to shards; the root unit (``model``) never reshards
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
            unit.unshard()
        try:
            yield accelerator.unwrap_model(model)
        finally:
            for unit in units:
                unit.reshard()
                unit.set_reshard_after_forward(unit is not model, recurse=False)
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
    if fsdp_on_cpu(accelerator):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(model, options=options)
        # tied weights (GPT-2's embedding and head) come back as two copies: share them again,
        # as the unsharded module's state dict does, so they are saved once
        first: dict[int, str] = {}
        for key, param in model.state_dict(keep_vars=True).items():
            if id(param) in first and key in state:
                state[key] = state[first[id(param)]]
            first.setdefault(id(param), key)
        return state
    return accelerator.get_state_dict(model, unwrap=True)


def optimizer_is_sharded(accelerator) -> bool:
    """ZeRO (any stage) and FSDP split the optimizer state; DDP replicates it."""
    from accelerate.utils import DistributedType

    return accelerator.num_processes > 1 and (
        accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        or fsdp_on_cpu(accelerator)
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
    A SIGTERM to the launcher itself (a scheduler's preemption) reaches every process, which
    finishes its step and saves; the launcher then exits 143 (128 + SIGTERM).
    """
    import torch.distributed.elastic.multiprocessing.errors as elastic_errors
    from accelerate.commands.launch import launch_command, launch_command_parser

    for name in ("torch.distributed.elastic", "accelerate"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    args = launch_command_parser().parse_args(
        [*launch_arguments(processes), "-m", "rewardtune", *argv]
    )
    os.environ.update(preemption_environment() | os.environ)
    try:
        launch_command(args)
    except elastic_errors.ChildFailedError as err:
        codes = [f.exitcode for f in err.failures.values()]
        return next((c for c in codes if c > 0), 1)
    return 0


def preemption_environment() -> dict[str, str]:
    """torchrun settings under which a stop request lets every process finish its step and
    save: the launcher forwards SIGTERM (a scheduler's preemption) to its processes and waits
    for them as long as it takes (the scheduler's own SIGKILL bounds it), instead of 30 s;
    Ctrl-C reaches every process of the terminal's group by itself, so the launcher leaves
    SIGINT alone (forwarding it would be a second Ctrl-C: stop at once)."""
    return {
        "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM,SIGHUP,SIGQUIT",
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "86400",
    }


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
