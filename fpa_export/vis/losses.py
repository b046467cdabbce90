"""Losses of the deep-visualisation tools (He, Wang & Hopcroft 2016, §3) and their automatic weights.

- Feature (inversion / content) term: |Φ_l(x) − Φ_l(x₀)|² / |Φ_l(x₀)|², relative so that one number
  means the same at every layer.
- Gram (texture / style) term: |G_l(x) − G_l(s)|² / |G_l(s)|² with G_l = F Fᵀ / (H·W), F the (C, H·W)
  activations of layer l.
- Automatic weights: a random network's layers have very different scales, so each term is weighted
  by the inverse of the norm of its gradient with respect to the image at the start of the
  optimisation (a pre-pass). Every term then pulls the first step equally hard and none dominates.
All terms of an objective are computed from one forward pass through the deepest layer they need.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from fpa_export.common.errors import FpaError
from fpa_export.fd.features import RandomVGG19


def gram(activation: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C, C) Gram matrices normalised by the number of positions."""
    flat = activation.flatten(2)                               # (B, C, H·W)
    return flat @ flat.transpose(1, 2) / flat.shape[2]


def relative_error(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (value - target).square().sum() / target.square().sum().clamp(min=1e-12)


@dataclass
class Term:
    """One loss term: match layer `layer`'s features ('feature') or Gram matrix ('gram')."""
    kind: str
    layer: str
    target: torch.Tensor
    weight: float = 1.0

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.layer}"


def make_terms(network: RandomVGG19, image: torch.Tensor, layers: Sequence[str], kind: str) -> list[Term]:
    """Terms matching `image`'s features or Grams at `layers`."""
    if kind not in ("feature", "gram"):
        raise FpaError(f"kind must be 'feature' or 'gram', got {kind!r}")
    with torch.no_grad():
        activations = network(image, layers)
    return [Term(kind, name, activations[name] if kind == "feature" else gram(activations[name]))
            for name in layers]


def term_values(network: RandomVGG19, terms: Sequence[Term], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Unweighted value of every term at image x, from one forward pass."""
    activations = network(x, {term.layer for term in terms})
    values = {}
    for term in terms:
        feature = activations[term.layer]
        values[term.key] = relative_error(feature if term.kind == "feature" else gram(feature), term.target)
    return values


def total_loss(network: RandomVGG19, terms: Sequence[Term], x: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Σ weight · value, and the unweighted values (floats) for reporting."""
    values = term_values(network, terms, x)
    total = sum(term.weight * values[term.key] for term in terms)
    return total, {key: float(value.detach()) for key, value in values.items()}


def gradient_norms(network: RandomVGG19, terms: Sequence[Term], image: torch.Tensor) -> dict[str, float]:
    """|∂ value_t / ∂ image| of every term (unweighted) at `image`."""
    x = image.detach().clone().requires_grad_(True)
    values = term_values(network, terms, x)
    norms = {}
    for i, term in enumerate(terms):
        (grad,) = torch.autograd.grad(values[term.key], x, retain_graph=i < len(terms) - 1)
        norms[term.key] = float(grad.norm())
    return norms


def set_automatic_weights(network: RandomVGG19, terms: Sequence[Term], image: torch.Tensor,
                          scale: float = 1.0) -> dict[str, float]:
    """weight_t = scale / (n · |∇ value_t|) at the initial image: each of the n terms then starts with
    the same gradient norm, scale / n. Returns the weights by term key."""
    norms = gradient_norms(network, terms, image)
    for term in terms:
        term.weight = scale / (len(terms) * max(norms[term.key], 1e-30))
    return {term.key: term.weight for term in terms}
