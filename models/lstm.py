"""An LSTM unrolled into gate arithmetic, reusing a trained `nn.LSTM`'s weights (docs/MODEL.md §2).

`nn.LSTM` is what training uses (fast fused kernels). For export, a straight line of matmuls and
element-wise ops is the portable form: no ONNX `LSTM`/`Loop` op, so TensorRT can fuse it and CUDA graphs
can capture it. Gate order is PyTorch's (i, f, g, o) with two bias vectors.
"""
from __future__ import annotations

import torch
from torch import nn


def unrolled_lstm(lstm: nn.LSTM, inputs: torch.Tensor,
                  state: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Run a batch-first `lstm` step by step: inputs (B, T, I) → outputs (B, T, H) of the last layer.

    `state` is (h0, c0), each (L, B, H), or None for zeros — as for `nn.LSTM`.
    """
    if not lstm.batch_first or lstm.bidirectional or lstm.proj_size:
        raise ValueError("unrolled_lstm supports batch-first, unidirectional LSTMs without projection")
    hidden = lstm.hidden_size
    layer_input = inputs
    for layer in range(lstm.num_layers):
        weight_ih = getattr(lstm, f"weight_ih_l{layer}")  # (4H, I)
        weight_hh = getattr(lstm, f"weight_hh_l{layer}")  # (4H, H)
        bias = getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")  # (4H,)
        if state is None:
            h = layer_input.new_zeros(layer_input.shape[0], hidden)  # (B, H)
            c = h
        else:
            h, c = state[0][layer], state[1][layer]  # (B, H) each
        # The input projection of every step at once; only the recurrence stays sequential.
        projected = torch.matmul(layer_input, weight_ih.t()) + bias  # (B, T, 4H)
        outputs = []
        for t in range(layer_input.shape[1]):
            gates = projected[:, t] + torch.matmul(h, weight_hh.t())  # (B, 4H)
            i, f, g, o = gates.chunk(4, dim=1)  # (B, H) each
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        layer_input = torch.stack(outputs, dim=1)  # (B, T, H)
    return layer_input
