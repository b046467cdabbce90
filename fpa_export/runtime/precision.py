"""Sampling precision: fp32 (the default), bf16 or fp16 — where each may run, and the probe that
verifies a low-precision sampler against fp32 before anything is written.

In low precision the LSTM and the projections (input generator, kvb, the U-Net if any) run in bf16 or
fp16; the key/value activations (softmax, tanh, sigmoid), the delta-rule canvas accumulation and the
final tanh stay fp32 (`FPAGenerator` casts back to fp32 before them), as the fp16 ONNX export does.

Where: bf16 on a CUDA device or on a CPU with bf16 instructions (avx512_bf16 or amx_bf16, read at run
time); fp16 on CUDA only. Anything else is refused with one line naming what is missing, because an
emulated bf16 on a CPU without those instructions is slower than fp32 and gains nothing.

The probe: `PROBE_IMAGES` images from a fixed latent draw are painted in fp32 (kept by content after
the first run: `runtime.probe_reference`) and in the requested precision (on every run); the sampler
is used only if at least 99 % of the uint8 pixel values agree within 2 levels and the mean difference
is at most 0.5 level (non-finite images always fail).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

from fpa_export.common.errors import FpaError

from .names import PRECISIONS

PROBE_IMAGES = 32
PROBE_SEED = 1234        # the fixed latent draw of the probe (torch.Generator seed)
WITHIN_LEVELS = 2        # a pixel value "agrees" when it is within this many uint8 levels of fp32
MIN_WITHIN = 0.99        # … for at least this fraction of all pixel values
MAX_MEAN_LEVELS = 0.5    # and the mean absolute difference is at most this many levels
LEGACY_NAMES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}  # older samples.json


class PrecisionError(FpaError):
    """A precision this device cannot run, or a low-precision sampler that failed its probe."""


def torch_dtype(precision: str):
    """The torch dtype of a precision name."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[check_name(precision)]


def check_name(precision: str) -> str:
    name = LEGACY_NAMES.get(precision, precision)
    if name not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return name


BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # CPU instruction sets that run bf16 matmuls natively


@lru_cache(maxsize=1)
def cpu_bf16_flags() -> tuple[str, ...]:
    """The bf16 instruction sets this CPU reports (empty when none, or when they cannot be read)."""
    from fpa_export.common.devices import cpu_flags

    flags = cpu_flags()
    return tuple(flag for flag in BF16_FLAGS if flag in flags)


def check_precision(precision: str, device: str = "cpu") -> str:
    """The canonical name of `precision` if it can run on `device`, else PrecisionError (one line)."""
    from fpa_export.common.devices import device_type

    name = check_name(precision)
    kind = device_type(device)
    if name == "fp16" and kind != "cuda":
        raise PrecisionError(f"--precision fp16 needs a CUDA device (got {device}); on a CPU use "
                             "fp32, or bf16 where the CPU has bf16 instructions")
    if name == "bf16" and kind == "cpu" and not cpu_bf16_flags():
        raise PrecisionError("--precision bf16 needs a CPU with bf16 instructions (avx512_bf16 or "
                             "amx_bf16; this CPU has neither) or a CUDA device; use fp32")
    if name == "bf16" and kind not in ("cpu", "cuda"):
        raise PrecisionError(f"--precision bf16 runs on a CPU or CUDA device, not {kind}")
    return name


def probe_latents(latent_size: int):
    """The probe's fixed latents: (PROBE_IMAGES, latent_size) float32."""
    import torch

    generator = torch.Generator(device="cpu").manual_seed(PROBE_SEED)
    return torch.randn(PROBE_IMAGES, latent_size, generator=generator)


def agreement(reference, images) -> dict:
    """How far uint8 `images` are from uint8 `reference` (same shape): the probe's figures."""
    import torch

    diff = (images.to(torch.int16) - reference.to(torch.int16)).abs().float()
    return {"images": int(reference.shape[0]),
            "within_2_levels": round(float((diff <= WITHIN_LEVELS).float().mean()), 6),
            "mean_levels": round(float(diff.mean()), 4),
            "max_levels": int(diff.max())}


def paint_reference(reference_sampler):
    """The fp32 sampler's uint8 images of the probe latents (the half `runtime.probe_reference` keeps)."""
    import torch

    from fpa_export.common.images import to_uint8

    with torch.inference_mode():
        return to_uint8(reference_sampler(probe_latents(reference_sampler.latent_size)))


def probe(low_sampler, reference, precision: str) -> dict:
    """Paint the probe batch with `low_sampler` and compare it with `reference` — the fp32 sampler, or
    its uint8 probe images already painted (`paint_reference`); return the figures, or PrecisionError
    beyond the tolerance (or on a non-finite image)."""
    import numpy as np
    import torch

    from fpa_export.common.images import to_uint8

    if not isinstance(reference, (torch.Tensor, np.ndarray)):
        reference = paint_reference(reference)
    reference = torch.as_tensor(reference)
    with torch.inference_mode():
        low = low_sampler(probe_latents(low_sampler.latent_size))
    if not bool(torch.isfinite(low).all()):
        raise PrecisionError(f"--precision {precision}: the probe batch gave non-finite pixels; use fp32")
    figures = agreement(reference, to_uint8(low))
    if figures["within_2_levels"] < MIN_WITHIN or figures["mean_levels"] > MAX_MEAN_LEVELS:
        raise PrecisionError(
            f"--precision {precision} is too far from fp32 for this model: "
            f"{100 * figures['within_2_levels']:.2f} % of probe pixel values within {WITHIN_LEVELS} "
            f"levels (need ≥ {100 * MIN_WITHIN:.0f} %), mean {figures['mean_levels']:.3f} levels "
            f"(need ≤ {MAX_MEAN_LEVELS}); use fp32")
    return figures


def record(precision: str, figures: Optional[dict] = None, verified: str = "") -> dict:
    """What samples.json stores about the precision of its images."""
    out: dict = {"name": precision}
    if figures is not None:
        out["probe"] = {**figures, "tolerance": {"within_2_levels": MIN_WITHIN,
                                                 "mean_levels": MAX_MEAN_LEVELS}}
    if verified:
        out["verified"] = verified
    return out
