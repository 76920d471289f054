"""Every step draws from RNGs seeded by (seed, step, rank): a resumed run samples exactly what
the uninterrupted run sampled."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_step(seed: int, step: int, rank: int) -> None:
    """Seed python, numpy and torch for one step of one process."""
    value = (seed * 1_000_003 + step * 7919 + rank) % 2**31
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)
