"""Learning-rate schedules: the paper's eq. 15 and linear warm-up + cosine decay, as LR multipliers."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def paper_schedule(step: int, warmup: int, total: int) -> float:
    """Eq. 15 divided by lr_max: min(t / w, sqrt(w / t)) · cos(π t / 2T), with t = step + 1."""
    t = step + 1
    return min(t / warmup, math.sqrt(warmup / t)) * math.cos(math.pi * min(t, total) / (2 * total))


def cosine_schedule(step: int, warmup: int, total: int, floor: float = 0.1) -> float:
    """Linear warm-up to the peak, then cosine decay to `floor` × peak at `total` steps."""
    t = step + 1
    if t <= warmup:
        return t / warmup
    progress = min(1.0, (t - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


SCHEDULES: dict[str, Callable[[int, int, int], float]] = {"paper": paper_schedule, "cosine": cosine_schedule}


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: str, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR over the optimizer's peak learning rate; `name` is one of SCHEDULES."""
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    if warmup < 1 or total < 1:
        raise ValueError(f"warmup ({warmup}) and total ({total}) steps must be at least 1")
    schedule = SCHEDULES[name]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule(step, warmup, total))
