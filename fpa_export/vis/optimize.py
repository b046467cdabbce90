"""Image optimisation with L-BFGS (the optimiser of He et al. 2016 and Gatys et al. 2015).

Pixels must stay in [0, 1]: optimised unconstrained, a style-transfer image put 12 % of its pixels
outside and clamping them tripled its loss. L-BFGS has no bounds, so it optimises a free variable u
and the image is its reflection into [0, 1], x = 1 − |1 − (u mod 2)| (a triangle wave). Unlike
x = sigmoid(u), the slope is ±1 everywhere, so black and white pixels (half of many FPA samples are
exactly 0) are reached exactly instead of ever more slowly; inverting such a sample to conv2_1 reached
a loss 10⁶× lower in the same 200 iterations. The start is white noise of small amplitude around
mid-grey. One `step` is one L-BFGS iteration (direction + strong-Wolfe line search);
frames for an animation are taken every `frame_every` iterations.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math
from typing import Callable

import torch

from fpa_export.common.errors import FpaError


@dataclass
class Optimisation:
    """What an optimisation produced: the image (1, 3, H, W) in [0, 1] and its history."""
    image: torch.Tensor
    losses: list[float]                   # total loss at the start of each iteration, then the final one
    values: dict[str, list[float]]        # unweighted term values: first and last
    frames: list[torch.Tensor] = field(default_factory=list)

    @property
    def initial_loss(self) -> float:
        return self.losses[0]

    @property
    def final_loss(self) -> float:
        return self.losses[-1]


def white_noise(size: int, seed: int = 0, amplitude: float = 0.1, channels: int = 3) -> torch.Tensor:
    """(1, C, size, size) uniform white noise on [0.5 − amplitude/2, 0.5 + amplitude/2], seeded."""
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return 0.5 + amplitude * (torch.rand(1, channels, size, size, generator=generator) - 0.5)


def reflect(free: torch.Tensor) -> torch.Tensor:
    """Fold any real value into [0, 1] by reflection at 0 and 1: identity on [0, 1]."""
    return 1.0 - (1.0 - torch.remainder(free, 2.0)).abs()


def lbfgs(start: torch.Tensor, loss_fn: Callable[[torch.Tensor], tuple[torch.Tensor, dict]],
          steps: int = 200, frame_every: int = 0, label: str = "optimising",
          progress: bool = True, history: int = 50) -> Optimisation:
    """Minimise loss_fn(x) → (total, {term: value}) over images x in (0, 1), from `start`."""
    from tqdm import tqdm

    free = start.detach().clamp(0, 1).clone().requires_grad_(True)
    # One iteration per `step` call; max_eval must be given too, or the line search gets
    # max_eval − 1 = 0 evaluations (torch derives max_eval = 1.25 · max_iter).
    optimiser = torch.optim.LBFGS([free], lr=1.0, max_iter=1, max_eval=26, history_size=history,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-12,
                                  tolerance_change=1e-16)
    first: dict = {}

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        total, term_values = loss_fn(reflect(free))
        total.backward()
        if not first:
            first.update(term_values)
        return total

    losses: list[float] = []
    values: dict[str, list[float]] = {}
    frames = [reflect(free.detach())] if frame_every else []
    # disable=None: a bar only on a terminal; piped logs get no carriage-return frames
    with tqdm(range(steps), desc=label, unit="it", disable=None if progress else True,
              leave=False) as bar:
        for step in bar:
            losses.append(optimiser.step(closure).item())   # the loss at the start of this iteration
            if step == 0:
                values = {key: [value] for key, value in first.items()}
            bar.set_postfix(loss=f"{losses[-1]:.3e}")
            if frame_every and (step + 1) % frame_every == 0:
                frames.append(reflect(free.detach()))
    image = reflect(free.detach())
    with torch.no_grad():
        final_total, final_values = loss_fn(image)
    losses.append(float(final_total))
    if not math.isfinite(losses[-1]) or not torch.isfinite(image).all():
        raise FpaError(f"{label}: the loss became {losses[-1]:g} (non-finite); nothing was written "
                       "(try other weights, fewer --steps or a smaller --size)")
    for key, value in final_values.items():
        values.setdefault(key, [value]).append(value)
    return Optimisation(image=image, losses=losses, values=values, frames=frames)
