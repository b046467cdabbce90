"""Style transfer with a random VGG-19 (He, Wang & Hopcroft 2016, §3.3; Gatys et al. 2016).

Content: the features of the content image at one deeper layer. Style: the Gram matrices of the style
image at conv1_1 … conv5_1. Starting from white noise, every term gets an automatic weight so that it
starts with the same gradient norm; `style_weight` then scales all style terms together.

The paper's content layer is conv4_2 on images of a few hundred pixels. On the 32–64 px images FPA
paints, conv4_2 of a random network sees only 4×4 to 8×8 positions and keeps almost none of the
content's layout (the result's edges correlated no better with the content's than with the style's),
so the default here is conv3_2; pass conv4_2 for the paper's setting on large images.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from fpa_export.common.errors import FpaError
from fpa_export.fd.features import RandomVGG19
from .losses import make_terms, set_automatic_weights, total_loss
from .optimize import Optimisation, lbfgs, white_noise

CONTENT_LAYER = "conv3_2"
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def transfer_style(content: torch.Tensor, style: torch.Tensor, network: Optional[RandomVGG19] = None,
                   content_layer: str = CONTENT_LAYER, style_layers: Sequence[str] = STYLE_LAYERS,
                   style_weight: float = 1.0, steps: int = 200, init_seed: int = 0,
                   frame_every: int = 0, progress: bool = True) -> tuple[Optimisation, dict[str, float]]:
    """The content image (1, 3, S, S) repainted with the style image's Gram statistics."""
    if not 0 < style_weight < math.inf:  # also NaN
        raise FpaError(f"--style-weight must be a positive finite number, got {style_weight}")
    network = network or RandomVGG19()
    content_terms = make_terms(network, content, [content_layer], "feature")
    style_terms = make_terms(network, style, style_layers, "gram")
    start = white_noise(content.shape[-1], init_seed)
    weights = set_automatic_weights(network, content_terms, start)
    weights.update(set_automatic_weights(network, style_terms, start, scale=style_weight))
    terms = content_terms + style_terms
    result = lbfgs(start, lambda x: total_loss(network, terms, x), steps=steps,
                   frame_every=frame_every, label="style", progress=progress)
    return result, weights
