"""The numpy reproduction of torch's CPU randn (fpa_export.sampling.randn) against torch itself."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from fpa_export.sampling import latents, randn

pytestmark = pytest.mark.skipif(not randn.exact_here(),
                                reason="torch runs its AVX2 randn kernel only on x86-64 with AVX2/FMA")


def _torch(seed: int, size: int) -> np.ndarray:
    return torch.randn(size, generator=torch.Generator().manual_seed(seed)).numpy()


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("size", [16, 17, 31, 37, 64, 100, 128, 512, 1000])
def test_bit_identical_to_torch_for_many_seeds(size):
    """Every size class: multiples of 16 and the redrawn tail of the others; 64-bit seeds too."""
    seeds = [0, 1, 2**32 - 1, 2**32, 2**40 + 7, 2**63 - 1] + list(range(10_000, 10_400))
    ours = randn.randn_rows(seeds, size)
    for row, seed in enumerate(seeds):
        np.testing.assert_array_equal(_bits(ours[row]), _bits(_torch(seed, size)), err_msg=str(seed))


def test_bit_identical_over_millions_of_values():
    """One long stream covers the uniforms' range densely (4M values, with their tails)."""
    size = 4 * 2**20 + 5
    assert np.array_equal(_bits(randn.randn(99, size)), _bits(_torch(99, size)))


def test_fma_rounds_once_even_where_float64_lands_halfway():
    """a·b + c with the exact sum just off a float32 halfway point: rounding the float64 sum would
    round twice (to the halfway point, then to even); one rounding must go the other way."""
    a, b = np.float32(1.0 + 2.0**-23), np.float32(1.0 - 2.0**-24)
    # exact a·b = 1 + 2^-24 − 2^-47; + c = 1 + 2^-24 + 2^-70: float64 rounds that to 1 + 2^-24, the
    # float32 halfway point between 1 and 1 + 2^-23, whose tie goes to 1; the true nearest is above
    c = np.float32(2.0**-47 * (1.0 + 2.0**-23))
    assert float(c) == 2.0**-47 + 2.0**-70 and float(a) * float(b) + float(c) == 1.0 + 2.0**-24
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    got = randn._fma(np.array([a]), np.array([b]), np.array([c]))[0]
    below, above = np.float32(1.0), np.nextafter(np.float32(1.0), np.float32(2.0))
    nearest = min((below, above), key=lambda v: abs(Fraction(float(v)) - exact))
    assert got == nearest == above


def test_numpy_latents_equal_torch_draws_bit_for_bit():
    indices = [0, 5, 77, 10**6]
    for size, truncation in [(128, 1.0), (512, 0.7), (20, 0.5)]:
        z = latents.latent_array(indices, 3, size, truncation)
        expected = latents._torch_draws([latents.index_seed(3, i) for i in indices], size)
        expected = (torch.from_numpy(expected) * truncation).numpy() if truncation != 1.0 else expected
        np.testing.assert_array_equal(_bits(z), _bits(expected))


def test_other_kernels_are_not_claimed(monkeypatch):
    randn.exact_here.cache_clear()
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    try:
        assert randn.exact_here() is False
    finally:
        monkeypatch.delenv("ATEN_CPU_CAPABILITY")
        randn.exact_here.cache_clear()
