"""Exponential moving average of the generator with the official schedule (docs/MODEL.md §6).

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

from fpa_export.common.errors import FpaError


@dataclass(frozen=True)
class EMASchedule:
    beta: float = 0.995        # weight of the old average
    start: int = 20000         # updates only after this step
    every: int = 10            # one update every this many steps
    reset_every: int = 1000    # period of the hard resets EMA ← G
    reset_offset: int = 2      # resets at steps ≡ reset_offset (mod reset_every)
    reset_until: int = 25000   # no resets after this step

    def __post_init__(self):
        if not 0.0 <= self.beta <= 1.0:  # outside, the "average" leaves the generator's range
            raise FpaError(f"--ema-beta must be in [0, 1] (the weight of the old average), got {self.beta}")

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


def first_update(schedule: EMASchedule) -> int:
    """The first step the EMA averages at: the smallest s > start with s ≡ 0 (mod every)."""
    return (schedule.start // schedule.every + 1) * schedule.every


def ema_record(schedule: EMASchedule, steps: int) -> dict:
    """What the schedule did in iterations 0 … steps−1, for checkpoints and the start-of-run notice:
    {'started': first update step or None (the EMA never averaged: it is a copy of G at its last reset),
     'last_reset': last hard-reset step or None, 'beta': beta}."""
    first = first_update(schedule)
    last = min(steps - 1, schedule.reset_until)
    reset = None
    if last >= schedule.reset_offset:
        reset = last - (last - schedule.reset_offset) % schedule.reset_every
    return {"started": first if first < steps else None, "last_reset": reset, "beta": schedule.beta}


def ema_notice(schedule: EMASchedule, steps: int) -> str:
    """One line when a run of `steps` ends before the EMA starts averaging; '' otherwise."""
    record = ema_record(schedule, steps)
    if record["started"] is not None:
        return ""
    copy = (f"a copy of G from step {record['last_reset']} (its last reset)" if record["last_reset"] is not None
            else "G's initial weights")
    first = first_update(schedule)
    last = (steps - 1) // schedule.every * schedule.every  # the last step of the run --ema-every allows
    if steps < 2:
        advice = "a run of 2 steps or more can average"
    elif last > 0:
        advice = f"lower --ema-start below {last} to average"
    else:
        advice = f"lower --ema-every to {steps - 1} or less, and --ema-start below it, to average"
    return (f"Note: --steps {steps} ends before the EMA's first update (step {first}, the first multiple "
            f"of --ema-every {schedule.every} after --ema-start {schedule.start}): the EMA generator will "
            f"never average and is {copy}; {advice}")
