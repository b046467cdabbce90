"""Representation inversion with a random VGG-19 (He, Wang & Hopcroft 2016, §3.1; Mahendran & Vedaldi).

Reconstruct an image from white noise by matching its features at one layer. `stacked_network` is the
paper's "stacked ranVGG": the network is built layer by layer, and for each convolution up to the
target layer K random weight draws are tried, keeping the one whose short inversion reconstructs the
reference image best (lowest pixel error); later layers are chosen on top of the earlier choices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from fpa_export.common.errors import FpaError
from fpa_export.fd.features import CONV_NAMES, LAYER_NAMES, RandomVGG19
from .losses import make_terms, total_loss
from .optimize import Optimisation, lbfgs, white_noise


def invert(target: torch.Tensor, layer: str, network: Optional[RandomVGG19] = None, steps: int = 200,
           init_seed: int = 0, frame_every: int = 0, progress: bool = True) -> Optimisation:
    """Image (1, 3, S, S) in [0, 1] whose `layer` features match those of `target`, from white noise."""
    network = network or RandomVGG19()
    terms = make_terms(network, target, [layer], "feature")
    start = white_noise(target.shape[-1], init_seed)
    return lbfgs(start, lambda x: total_loss(network, terms, x), steps=steps, frame_every=frame_every,
                 label=f"invert {layer}", progress=progress)


@dataclass
class StackedChoice:
    """For one convolution: the pixel MSE of each draw's reconstruction, and the draw kept."""
    layer: str
    errors: list[float]
    chosen: int


def stacked_network(reference: torch.Tensor, layer: str, draws: int, seed: int = 0,
                    base_width: int = 64, steps_per_draw: int = 30,
                    progress: bool = True) -> tuple[RandomVGG19, list[StackedChoice]]:
    """A RandomVGG19 whose convolutions up to `layer` are each the best of `draws` random draws."""
    if layer not in LAYER_NAMES:
        raise FpaError(f"unknown layer {layer!r}; choose from {', '.join(LAYER_NAMES)}")
    network = RandomVGG19(seed=seed, base_width=base_width)
    depth = LAYER_NAMES.index(layer)
    choices = []
    for conv in (name for name in CONV_NAMES if LAYER_NAMES.index(name) <= depth):
        errors = []
        for draw in range(draws):
            network.set_draw(conv, draw)
            result = invert(reference, conv, network, steps=steps_per_draw, progress=False)
            errors.append(float((result.image - reference).square().mean()))
        best = min(range(draws), key=errors.__getitem__)
        network.set_draw(conv, best)
        choices.append(StackedChoice(conv, errors, best))
        if progress:
            import sys
            from tqdm import tqdm
            tqdm.write(f"stacked ranVGG: {conv} keeps draw {best} of {draws} (MSE {errors[best]:.2e})",
                       file=sys.stderr)
    return network, choices


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    mse = float((image.clamp(0, 1) - reference.clamp(0, 1)).square().mean())
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse)).item()
