"""One linear layer fewer at sampling time: the v2 step input folded into the LSTM's input weights.

The v2 input generator feeds the LSTM x_t = A m_t + a (`step_input`, m_t of size m = 8, x_t of size
e = 128), and the LSTM's first layer multiplies it by W_ih (4H × e). Both are linear, so

    W_ih x_t + b_ih = (W_ih A) m_t + (W_ih a + b_ih)

is the same map with an input of size m: for the paper-size model that removes 4.3 of the 39 GFLOP of a
batch of 64 (7–10 % of a bf16 batch on the 2-core CPU, docs/BENCHMARKS.md). The folded weights are
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
    config = generator.config
    step = getattr(generator, "step_input", None)
    return (config.input_generator == "v2" and not config.step_embedding and isinstance(step, nn.Linear)
            and step.bias is not None and generator.lstm.bias)


def fold_step_input(generator: FPAGenerator) -> FPAGenerator:
    """A copy of `generator` whose `step_input` is absorbed into layer 0 of its LSTM (same dtype and
    device as the original); the original is untouched. Models `can_fold` rejects come back as a copy."""
    folded = copy.deepcopy(generator)
    if not can_fold(generator):
        return folded
    lstm, step = generator.lstm, generator.step_input
    weight_ih = lstm.weight_ih_l0.detach().double()
    fused = nn.LSTM(step.in_features, lstm.hidden_size, lstm.num_layers, batch_first=lstm.batch_first,
                    device="meta")
    params = {name: param.detach().clone() for name, param in lstm.named_parameters()}
    dtype = lstm.weight_ih_l0.dtype
    params["weight_ih_l0"] = (weight_ih @ step.weight.detach().double()).to(dtype)
    params["bias_ih_l0"] = (lstm.bias_ih_l0.detach().double()
                            + weight_ih @ step.bias.detach().double()).to(dtype)
    fused.load_state_dict(params, assign=True)
    fused.requires_grad_(lstm.weight_hh_l0.requires_grad)
    folded.lstm = fused.train(lstm.training)
    folded.step_input = nn.Identity()
    return folded
