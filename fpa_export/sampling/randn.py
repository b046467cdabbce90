"""torch's CPU `randn`, reproduced bit for bit in numpy, so that sampling an exported graph needs no
`import torch` (≈ 1.8 s of start-up on the 2-core development CPU, more than painting 10,000 default-
model images in onnxruntime).

What torch computes for `torch.Generator().manual_seed(s)` then `torch.randn(n, generator=g)` (float32,
n ≥ 16, on an x86-64 CPU with AVX2 and FMA, where ATen runs its AVX2 normal kernel; its AVX-512 build
runs the same one):
- an MT19937 engine seeded with the low 32 bits of s (the classic `init_genrand`), one 32-bit draw per
  uniform u = (draw & (2²⁴ − 1)) · 2⁻²⁴;
- n uniforms first, then Box–Muller on blocks of 16, pairing entry j with j + 8:
  r = sqrt(−2·log(1 − u_j)), θ = 2π·u_{j+8}, out_j = r·cos θ, out_{j+8} = r·sin θ; when n is not a
  multiple of 16, 16 fresh uniforms replace the last 16 entries and are transformed again;
- log, sin and cos are the Cephes polynomials of ATen's AVX2 math header, in float32, with the
  multiply-adds that the compiler fuses (FMA: one rounding) fused here too (`_fma`, exact).

`exact_here()` says whether this platform's torch takes that path; anywhere else (another architecture,
no AVX2/FMA, `ATEN_CPU_CAPABILITY=default`) the caller draws with torch itself. The test suite compares
this module with torch bit for bit over millions of values.
"""
from __future__ import annotations

from functools import lru_cache
import os
import platform

import numpy as np

F32, F64 = np.float32, np.float64
_LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
          -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
_LOG_Q1, _LOG_Q2 = F32(-2.12194440e-4), F32(0.693359375)
_SQRT_HALF = F32(0.707106781186547524)
_FOUR_OVER_PI = F32(1.27323954473516)
_DP = (F32(-0.78515625), F32(-2.4187564849853515625e-4), F32(-3.77489497744594108e-8))
_SIN_P = (F32(-1.9515295891e-4), F32(8.3321608736e-3), F32(-1.6666654611e-1))
_COS_P = (F32(2.443315711809948e-5), F32(-1.388731625493765e-3), F32(4.166664568298827e-2))
_TWO_PI = F32(2.0 * np.pi)
_MIN_NORMAL = np.array([0x00800000], np.int32).view(F32)[0]
_MANTISSA_OFF = np.int32(~0x7F800000)
_HALF_BITS = np.array([0.5], F32).view(np.int32)[0]
_SAFE_CAPABILITIES = ("", "avx2", "avx512")  # ATEN_CPU_CAPABILITY values that keep the AVX2 kernel


@lru_cache(maxsize=1)
def exact_here() -> bool:
    """True where torch's CPU randn is the AVX2 kernel this module reproduces."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    if os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower() not in _SAFE_CAPABILITIES:
        return False
    from fpa_export.common.devices import cpu_flags

    return {"avx2", "fma"} <= cpu_flags()


def randn(seed: int, size: int) -> np.ndarray:
    """float32 (size,), bit-identical to torch.randn(size, generator=torch.Generator().manual_seed(seed))
    on the platforms `exact_here()` accepts. size ≥ 16 (smaller sizes take another torch kernel)."""
    return randn_rows([seed], size)[0]


def randn_rows(seeds, size: int) -> np.ndarray:
    """float32 (len(seeds), size): row k as `randn(seeds[k], size)`, transformed in one vectorised pass."""
    if size < 16:
        raise ValueError("randn_rows reproduces torch's kernel for sizes of at least 16")
    tail = 16 if size % 16 else 0
    draws = np.empty((len(seeds), size + tail), np.uint32)
    engine = np.random.MT19937(0)  # reseeded per row below (a seed here spares reading urandom)
    legacy = np.random.RandomState(engine)  # its seed() is init_genrand on `engine`
    for row, seed in enumerate(seeds):
        legacy.seed(int(seed) & 0xFFFFFFFF)  # init_genrand of the low 32 bits, as torch's mt19937
        draws[row] = engine.random_raw(size + tail)  # raw 32-bit draws (2.7× faster than randint)
    uniforms = (draws & np.uint32(0xFFFFFF)).astype(F32) * F32(2.0**-24)
    out = np.empty((len(seeds), size), F32)
    whole = size - size % 16
    out[:, :whole] = _box_muller(uniforms[:, :whole].reshape(-1, 16)).reshape(len(seeds), whole)
    if tail:
        out[:, size - 16:] = _box_muller(uniforms[:, size:])
    return out


def _box_muller(blocks: np.ndarray) -> np.ndarray:
    """(k, 16) uniforms → (k, 16) normals, as ATen's normal_fill_16_AVX2 (mean 0, std 1)."""
    radius = np.sqrt(F32(-2.0) * _log(F32(1.0) - blocks[:, :8]))
    sin, cos = _sincos(_TWO_PI * blocks[:, 8:])
    # the kernel ends with fmadd(n, std = 1, mean = 0) = n + 0 exactly (which turns -0.0 into +0.0)
    return np.concatenate([radius * cos + F32(0), radius * sin + F32(0)], 1)


def _fma(a, b, c) -> np.ndarray:
    """float32 a·b + c rounded once, as the FMA instruction: the product is exact in float64, and the
    float64 sum rounded to float32 is the single rounding except where that sum lies exactly halfway
    between two float32 values; there the sum's own rounding error (two-sum) says which way to go."""
    product = np.asarray(a, F64) * np.asarray(b, F64)
    addend = np.asarray(c, F64)
    total = product + addend
    halfway = (total.view(np.uint64) & np.uint64((1 << 29) - 1)) == np.uint64(1 << 28)
    if halfway.any():
        product, addend = np.broadcast_arrays(product, addend)
        at = np.nonzero(halfway)
        p, q, t = product[at], addend[at], total[at]
        back = t - p
        error = (p - (t - back)) + (q - back)
        total = total.copy()
        total[at] = np.where(error == 0, t, np.nextafter(t, np.where(error > 0, np.inf, -np.inf)))
    return total.astype(F32)


def _log(x: np.ndarray) -> np.ndarray:
    """Cephes logf (x in (0, 1] here), in the AVX2 header's operation order."""
    x = np.maximum(x, _MIN_NORMAL)
    exponent = (x.view(np.uint32) >> np.uint32(23)).astype(np.int32) - np.int32(127)
    x = ((x.view(np.int32) & _MANTISSA_OFF) | _HALF_BITS).view(F32)  # mantissa in [0.5, 1)
    e = exponent.astype(F32) + F32(1.0)
    small = x < _SQRT_HALF
    e = e - np.where(small, F32(1.0), F32(0.0))
    x = (x - F32(1.0)) + np.where(small, x, F32(0.0))
    z = x * x
    y = _fma(F32(_LOG_P[0]), x, F32(_LOG_P[1]))
    for coefficient in _LOG_P[2:]:
        y = _fma(y, x, F32(coefficient))
    y = _fma(y * x, z, e * _LOG_Q1)
    y = _fma(-z, F32(0.5), y)
    return _fma(e, _LOG_Q2, x + y)


def _sincos(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cephes sinf and cosf together (x ≥ 0 here), in the AVX2 header's operation order."""
    negative = np.signbit(x)
    x = np.abs(x)
    octant = ((x * _FOUR_OVER_PI).astype(np.int32) + 1) & ~1
    y = octant.astype(F32)
    sin_negative = negative ^ ((octant & 4) != 0)
    cos_negative = (~(octant - 2) & 4) != 0
    first_polynomial = (octant & 2) == 0
    for dp in _DP:  # extended-precision reduction: x − y·π/4 in three parts
        x = _fma(y, dp, x)
    z = x * x
    cos_poly = _fma(_COS_P[0], z, _COS_P[1])
    cos_poly = _fma(cos_poly, z, _COS_P[2])
    cos_poly = _fma(cos_poly * z, z, -(z * F32(0.5))) + F32(1.0)
    sin_poly = _fma(_SIN_P[0], z, _SIN_P[1])
    sin_poly = _fma(sin_poly, z, _SIN_P[2])
    sin_poly = _fma(sin_poly * z, x, x)
    sin = np.where(first_polynomial, sin_poly, cos_poly)
    cos = np.where(first_polynomial, cos_poly, sin_poly)
    return np.where(sin_negative, -sin, sin), np.where(cos_negative, -cos, cos)
