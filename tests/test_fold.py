"""The v2 step input folded into the LSTM for low-precision sampling (models.fold)."""
from __future__ import annotations

import pytest
import torch

from fpa_export.models.fold import can_fold, fold_step_input
from fpa_export.runtime.torch_backend import TorchSampler
from tests.conftest import make_generator


def _z(batch: int = 5, size: int = 8, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch, size, generator=torch.Generator().manual_seed(7)).to(dtype)


@pytest.mark.parametrize("layers", [1, 2])
def test_folding_is_the_same_map(layers):
    """In float64 the folded and the original model agree to rounding: the fold is an identity."""
    generator = make_generator(3, num_layers=layers).double()
    folded = fold_step_input(generator)
    assert can_fold(generator)
    assert isinstance(folded.step_input, torch.nn.Identity)
    assert folded.lstm.input_size == generator.config.mini_latent_size
    assert folded.lstm.num_layers == layers and folded.lstm.weight_ih_l0.dtype == torch.float64
    z = _z(dtype=torch.float64)
    with torch.no_grad():
        expected = generator.canvas(z)
        assert torch.allclose(folded.canvas(z), expected, rtol=0, atol=1e-12)
        assert torch.allclose(folded.canvas(z, unrolled=True), expected, rtol=0, atol=1e-12)


def test_the_original_is_untouched_and_unfoldable_models_are_copied():
    generator = make_generator(4)
    before = {name: value.clone() for name, value in generator.state_dict().items()}
    fold_step_input(generator)
    after = generator.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(generator.step_input, torch.nn.Linear)
    z = _z()
    for changes in (dict(input_generator="v1"), dict(step_embedding=True)):
        other = make_generator(5, **changes)
        assert not can_fold(other)
        copy = fold_step_input(other)
        assert copy is not other
        with torch.no_grad():
            assert torch.equal(copy(z), other(z))


def test_only_the_low_precision_sampler_folds():
    """fp32 keeps the model's own layers (bit-identical to eager); bf16 paints the folded model."""
    generator = make_generator(6)
    z = _z()
    fp32 = TorchSampler(generator, precision="fp32")
    assert isinstance(fp32.generator.step_input, torch.nn.Linear)
    with torch.no_grad():
        assert torch.equal(fp32(z), generator(z))
    bf16 = TorchSampler(generator, precision="bf16")
    assert isinstance(bf16.generator.step_input, torch.nn.Identity)
    assert bf16.generator.lstm.weight_ih_l0.dtype == torch.bfloat16
    with torch.no_grad():
        images = bf16(z)
        assert images.dtype == torch.float32
        assert (images - generator(z)).abs().max() < 0.05  # bf16 rounding, not another model


def test_the_fold_keeps_whether_the_weights_require_grad():
    generator = make_generator(8)
    assert all(p.requires_grad for p in fold_step_input(generator).lstm.parameters())
    generator.requires_grad_(False)
    assert not any(p.requires_grad for p in fold_step_input(generator).lstm.parameters())
