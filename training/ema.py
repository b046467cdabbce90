"""Exponential moving average of the generator with the official schedule (FPA_SPEC §6).

With `step` the number of training iterations completed before the current one (0-based, as the official
`self.steps`), after the iteration's optimiser steps:
- update EMA ← beta·EMA + (1 − beta)·G when step > start and step % every == 0;
- hard reset EMA ← G when step <= reset_until and step % reset_every == reset_offset.
Paper defaults: beta 0.995, start 20000, every 10, resets at 2, 1002, …, 24002.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch


@dataclass(frozen=True)
class EMASchedule:
    beta: float = 0.995        # weight of the old average
    start: int = 20000         # updates only after this step
    every: int = 10            # one update every this many steps
    reset_every: int = 1000    # period of the hard resets EMA ← G
    reset_offset: int = 2      # resets at steps ≡ reset_offset (mod reset_every)
    reset_until: int = 25000   # no resets after this step

    def should_update(self, step: int) -> bool:
        return step > self.start and step % self.every == 0

    def should_reset(self, step: int) -> bool:
        return step <= self.reset_until and step % self.reset_every == self.reset_offset


@torch.no_grad()
def ema_update(average: Iterable[torch.Tensor], current: Iterable[torch.Tensor], beta: float) -> None:
    for avg, cur in zip(average, current):
        avg.lerp_(cur.to(avg.dtype), 1.0 - beta)  # avg·beta + cur·(1 − beta)


@torch.no_grad()
def ema_reset(average: Iterable[torch.Tensor], current: Iterable[torch.Tensor]) -> None:
    for avg, cur in zip(average, current):
        avg.copy_(cur)


def apply_schedule(schedule: EMASchedule, step: int, average, current) -> str:
    """Do what the schedule says at `step`; returns 'reset', 'update' or ''."""
    if schedule.should_update(step):
        ema_update(average, current, schedule.beta)
        action = "update"
    else:
        action = ""
    if schedule.should_reset(step):
        ema_reset(average, current)
        action = "reset"
    return action
