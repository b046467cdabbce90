"""One linear layer fewer at sampling time: the v2 step input folded into the LSTM's input weights.

The v2 input generator feeds the LSTM x_t = A m_t + a (`step_input`, m_t of size m = 8, x_t of size
e = 128), and the LSTM's first layer multiplies it by W_ih (4H × e). Both are linear, so

    W_ih x_t + b_ih = (W_ih A) m_t + (W_ih a + b_ih)

is the same map with an input of size m: for the paper-size model that removes 4.3 of the 42 GFLOP of a
batch of 64 (bf16 512 → 555 img/s on a 2-core CPU without AMX, `tools/bench_sampler.py`,
docs/BENCHMARKS.md). The folded weights are
computed in float64 and rounded once, so in low precision they are one rounding from the exact product
instead of two chained low-precision layers; in fp32 the result moves by ~1e-8, which is why only the
low-precision samplers fold (fp32 stays bit-identical to training and to the exported graphs).

A model with a step embedding (added to x_t after `step_input`, a different bias at every step) or
the v1 input generator (no `step_input`) is returned unchanged.
"""
from __future__ import annotations

import copy

from torch import nn

from .fpa import FPAGenerator


def can_fold(generator: FPAGenerator) -> bool:
    """True when `fold_step_input` changes this model (v2 input generator, no step embedding)."""
    return generator.config.input_generator == "v2" and not generator.config.step_embedding


def fold_step_input(generator: FPAGenerator) -> FPAGenerator:
    """A copy of `generator` whose `step_input` is absorbed into layer 0 of its LSTM (same dtype,
    device and requires_grad as the original); the original is untouched. Models `can_fold` rejects
    come back as a plain copy."""
    folded = copy.deepcopy(generator)
    if not can_fold(generator):
        return folded
    lstm, step = folded.lstm, folded.step_input
    weight_ih, dtype = lstm.weight_ih_l0.detach().double(), lstm.weight_ih_l0.dtype
    new_weight = weight_ih @ step.weight.detach().double()  # (4H, m)
    new_bias = lstm.bias_ih_l0.detach().double() + weight_ih @ step.bias.detach().double()  # (4H,)
    requires_grad = lstm.weight_ih_l0.requires_grad
    # nn.LSTM keeps its flat weight list in step with these attributes; input_size is what it checks
    lstm.weight_ih_l0 = nn.Parameter(new_weight.to(dtype), requires_grad=requires_grad)
    lstm.bias_ih_l0 = nn.Parameter(new_bias.to(dtype), requires_grad=requires_grad)
    lstm.input_size = step.in_features
    folded.step_input = nn.Identity()
    return folded
