"""FPAGenerator: parameter counts, initialisation, shapes, paint() bookkeeping (docs/MODEL.md §1–3)."""
from __future__ import annotations

import math

import pytest
import torch

from fpa_export.models import FPAConfig, FPAGenerator
from fpa_export.models.lstm import unrolled_lstm
from tests.conftest import make_generator, tiny_config


def trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_paper_configuration_parameter_count():
    assert trainable(FPAGenerator(FPAConfig())) == 6_437_891


def test_paper_configuration_at_16_steps_counts_the_smaller_input_generator():
    # Only Linear(d → m·T) depends on T: 512·8·(64−16) weights and 8·(64−16) biases fewer.
    assert trainable(FPAGenerator(FPAConfig(num_steps=16))) == 6_437_891 - (512 + 1) * 8 * 48


def test_initialisation_statistics():
    torch.manual_seed(0)
    gen = FPAGenerator(FPAConfig())
    lstm_bound = 1 / math.sqrt(1024)
    for name, param in gen.lstm.named_parameters():
        assert param.abs().max() <= lstm_bound, name
        assert param.abs().max() > 0.95 * lstm_bound, name  # uniform fills the whole interval
    kvb_bound = 1 / math.sqrt(387)
    for param in (gen.kvb.weight, gen.kvb.bias):
        assert param.abs().max() <= kvb_bound
        assert param.abs().max() > 0.95 * kvb_bound
    std = gen.step_input.weight.std().item()  # Kaiming normal, fan-in 8, ReLU gain
    assert abs(std - math.sqrt(2 / 8)) < 0.03
    images = gen(torch.randn(8, 512))
    assert images.abs().max() < 0.1  # nearly flat at initialisation


def test_v1_initialisation_uses_kaiming_on_latent_to_init():
    torch.manual_seed(0)
    gen = FPAGenerator(tiny_config(input_generator="v1", latent_size=64, hidden_size=64))
    assert abs(gen.latent_to_init.weight.std().item() - math.sqrt(2 / 64)) < 0.02
    assert not hasattr(gen, "step_input") and not hasattr(gen, "input_generator")


@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_and_range(tiny_variant, batch):
    _, changes = tiny_variant
    gen = make_generator(**changes)
    images = gen(torch.randn(batch, gen.latent_size))
    c = gen.config
    assert images.shape == (batch, c.channels, c.image_size, c.image_size)
    assert images.abs().max() <= 1.0


def test_greyscale_batch_one_keeps_every_axis():
    gen = make_generator(channels=1)
    painting = gen.paint(torch.randn(1, gen.latent_size))
    assert painting.image.shape == (1, 1, 8, 8)
    assert painting.updates.shape == (1, 4, 1, 8, 8)
    assert painting.partials.shape == (1, 4, 1, 8, 8)


@pytest.mark.parametrize("changes", [dict(), dict(lr_per_row=True, value_tanh=True),
                                     dict(input_generator="v1", step_embedding=True, wide_out_dim=12),
                                     dict(out_tanh=False, key_softmax=False, lr_sigmoid=False)])
def test_paint_bookkeeping(changes):
    gen = make_generator(**changes).double()
    z = torch.randn(2, gen.latent_size, dtype=torch.float64)
    painting = gen.paint(z)
    torch.testing.assert_close(painting.partials[:, -1], painting.canvas)
    torch.testing.assert_close(painting.updates.sum(dim=1), painting.canvas)
    torch.testing.assert_close(painting.image, gen(z))
    expected = torch.tanh(painting.canvas) if gen.config.out_tanh else painting.canvas
    torch.testing.assert_close(painting.image, expected)


def test_each_update_is_rank_one():
    gen = make_generator(lr_per_row=True).double()
    updates = gen.paint(torch.randn(1, gen.latent_size, dtype=torch.float64)).updates
    ranks = torch.linalg.matrix_rank(updates.reshape(-1, 8, 8), atol=1e-10)
    assert ranks.max().item() == 1


def test_channel_major_split_of_kvb():
    """kvb's outputs are keys | values | lrs, each in channel-major blocks (docs/MODEL.md §1)."""
    gen = make_generator(channels=3, key_softmax=False, lr_sigmoid=False).double()
    z = torch.randn(2, gen.latent_size, dtype=torch.float64)
    keys, values, lrs = gen.painting_instructions(z)
    hidden = gen.lstm(gen._lstm_inputs(z), gen._initial_state(z))[0]
    raw = gen.kvb(hidden)  # (B, T, 3·(16 + 1))
    size = 8
    for b in range(2):
        for ch in range(3):
            n = b * 3 + ch
            torch.testing.assert_close(keys[n], raw[b, :, ch * size:(ch + 1) * size])
            torch.testing.assert_close(values[n], raw[b, :, 3 * size + ch * size:3 * size + (ch + 1) * size])
            torch.testing.assert_close(lrs[n, :, 0], raw[b, :, 6 * size + ch])


def test_unrolled_lstm_matches_nn_lstm_in_float64():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 7, num_layers=2, batch_first=True).double()
    x = torch.randn(3, 6, 5, dtype=torch.float64)
    state = (torch.randn(2, 3, 7, dtype=torch.float64), torch.randn(2, 3, 7, dtype=torch.float64))
    torch.testing.assert_close(unrolled_lstm(lstm, x, state), lstm(x, state)[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(unrolled_lstm(lstm, x), lstm(x)[0], rtol=0, atol=1e-12)


def test_unroll_flag_gives_the_same_images():
    gen = make_generator().double()
    z = torch.randn(3, gen.latent_size, dtype=torch.float64)
    expected = gen(z)
    torch.testing.assert_close(gen(z, unrolled=True), expected, rtol=0, atol=1e-12)


def test_v2_latent_to_init_off_starts_from_zero_state():
    gen = make_generator(latent_to_init=False)
    assert not hasattr(gen, "latent_to_init")
    assert gen._initial_state(torch.randn(2, gen.latent_size)) is None


def test_config_round_trip_and_errors():
    from fpa_export.models import ConfigError, UNetConfig
    config = tiny_config(unet=UNetConfig(channels=3, dim=8, dim_mults=(1, 2)))
    assert FPAConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="input_generator"):
        tiny_config(input_generator="v3")
    with pytest.raises(ConfigError, match="unknown config field"):
        FPAConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="unet.channels"):
        tiny_config(channels=1, unet=UNetConfig(channels=3))
