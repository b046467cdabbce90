"""The unrolled LSTM used by every exported graph (models.lstm.unrolled_lstm, docs/MODEL.md §2).

References are independent of the code under test: `nn.LSTM`'s fused kernel, and a stack of
`nn.LSTMCell`s sharing its weights, stepped by hand. All in float64, tolerance 1e-6 as the export spec asks.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from fpa_export.models.lstm import unrolled_lstm
from tests.conftest import make_generator


def _cells_reference(lstm: nn.LSTM, x: torch.Tensor, state) -> torch.Tensor:
    """Run `lstm` through nn.LSTMCell copies of its layers, one time step at a time."""
    layers = []
    for layer in range(lstm.num_layers):
        cell = nn.LSTMCell(lstm.input_size if layer == 0 else lstm.hidden_size, lstm.hidden_size)
        cell = cell.double()
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(lstm, f"{name}_l{layer}"))
        layers.append(cell)
    batch = x.shape[0]
    h = [state[0][k] if state else x.new_zeros(batch, lstm.hidden_size) for k in range(lstm.num_layers)]
    c = [state[1][k] if state else x.new_zeros(batch, lstm.hidden_size) for k in range(lstm.num_layers)]
    outputs = []
    for t in range(x.shape[1]):
        inp = x[:, t]
        for k, cell in enumerate(layers):
            h[k], c[k] = cell(inp, (h[k], c[k]))
            inp = h[k]
        outputs.append(inp)
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("batch", [1, 5])
def test_unrolled_lstm_matches_nn_lstm_and_cells(layers, with_state, batch):
    torch.manual_seed(layers * 10 + batch)
    lstm = nn.LSTM(6, 9, num_layers=layers, batch_first=True).double()
    x = torch.randn(batch, 7, 6, dtype=torch.float64)
    state = (torch.randn(layers, batch, 9, dtype=torch.float64),
             torch.randn(layers, batch, 9, dtype=torch.float64)) if with_state else None
    with torch.no_grad():
        got = unrolled_lstm(lstm, x, state)
        fused = lstm(x, state)[0]
        cells = _cells_reference(lstm, x, state)
    assert got.shape == (batch, 7, 9)
    assert (got - fused).abs().max() <= 1e-6
    assert (got - cells).abs().max() <= 1e-6


def test_generator_unrolled_in_float64_matches_nn_lstm():
    generator = make_generator(3, num_layers=2).double()
    z = torch.randn(4, generator.latent_size, dtype=torch.float64)
    with torch.no_grad():
        reference = generator(z)
        unrolled = generator(z, unrolled=True)
    assert (unrolled - reference).abs().max() <= 1e-6
    assert reference.abs().max() > 0  # not a degenerate all-zero comparison


@pytest.mark.parametrize("kwargs", [dict(batch_first=False), dict(bidirectional=True),
                                    dict(proj_size=2)])
def test_unsupported_lstm_layouts_are_refused(kwargs):
    lstm = nn.LSTM(3, 4, **{"batch_first": True, **kwargs})
    with pytest.raises(ValueError, match="batch-first"):
        unrolled_lstm(lstm, torch.randn(2, 3, 3))
