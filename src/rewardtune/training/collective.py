"""Decisions and means taken over every process, so all processes act alike."""

from __future__ import annotations

import torch


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
