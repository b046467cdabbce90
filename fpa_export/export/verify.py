"""Every export verifies itself: onnx.checker, then onnxruntime against eager PyTorch on fixed seeds.

Tolerances (float outputs are compared relative to max(1, max |reference|), which for images in
[-1, 1] is the plain max abs difference; the steps graph's partial sums are unbounded):
  float32 graphs: ≤ 1e-4;  float16 graphs: ≤ 2e-2, and ≥ 99 % of uint8 image pixels within one level.
  uint8 image outputs: within one level everywhere (float32), ≥ 99 % within one level and none
  further than 6 levels (≈ 2e-2 of the [-1, 1] range, float16).
`atol` (the `--atol` option, optimum's name) replaces the float tolerance; uint8 levels keep theirs.
Every comparison is written `not (difference <= tolerance)`, so a NaN difference fails, and a
reference that is not finite (NaN or inf weights) fails before any comparison.
"""
from __future__ import annotations

from dataclasses import dataclass
import math
import os
from typing import Optional

import numpy as np
import torch

from fpa_export.models import FPAGenerator
from fpa_export.common.images import to_uint8
from fpa_export.common.optional import require
from .sidecar import ExportError
from .spec import INPUT_NAME, ExportSpec

VERIFY_BATCHES = ((1, 0), (7, 1))  # (batch, seed): batch 1 and an odd larger batch, one file


@dataclass(frozen=True)
class Tolerance:
    max_diff: float          # float outputs, relative to max(1, max |reference|)
    min_within_one: float    # fraction of uint8 image pixels within one level
    max_levels: int          # uint8 outputs: largest allowed level difference

    @classmethod
    def for_spec(cls, spec: ExportSpec, atol: Optional[float] = None) -> "Tolerance":
        default = cls(2e-2, 0.99, 6) if spec.fp16 else cls(1e-4, 1.0, 1)
        if atol is None:
            return default
        if not 0 <= atol < math.inf:  # also refuses NaN; inf would pass any graph
            raise ExportError(f"--atol must be a non-negative finite number, got {atol}")
        return cls(float(atol), default.min_within_one, default.max_levels)


def import_onnx():
    return require("onnx", "to check and export ONNX graphs")


def check_model(model) -> None:
    onnx = import_onnx()
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"onnx.checker rejected the graph: {first}") from None


@torch.inference_mode()
def compare_with_torch(model_bytes: bytes, spec: ExportSpec, generator: FPAGenerator,
                       atol: Optional[float] = None) -> dict:
    """Run the graph in onnxruntime (CPU) and eager PyTorch (float32, nn.LSTM) on VERIFY_BATCHES.

    Returns {output name: {"max_abs_diff", "max_rel_diff", ["within_one_level", "max_levels"]}}, the
    worst over the batches; raises ExportError when a tolerance is exceeded.
    """
    session = cpu_session(model_bytes)
    reference = ExportSpec(spec.config, spec.graph, uint8=False, rgb=spec.rgb,
                           lstm="op").module(generator).eval()
    report: dict[str, dict] = {}
    for batch, seed in VERIFY_BATCHES:
        z = spec.sample_input(batch, seed)
        outputs = session.run(spec.output_names, {INPUT_NAME: z.numpy()})
        expected = reference(z)
        expected = (expected,) if isinstance(expected, torch.Tensor) else expected
        for tensor, got, want in zip(spec.outputs, outputs, expected):
            check_finite(tensor.name, want)
            if got.shape != tuple(want.shape):
                raise ExportError(f"{tensor.name}: onnxruntime gave shape {got.shape}, "
                                  f"PyTorch {tuple(want.shape)} at batch {batch}")
            want = want.detach().numpy()
            want = to_uint8(want) if spec.uint8 else want  # a uint8 graph is compared in levels
            merge(report.setdefault(tensor.name, {}), differences(got, want))
    enforce(report, Tolerance.for_spec(spec, atol), spec)
    return report


def cpu_session(model):
    """An onnxruntime CPU session of a graph (bytes or path) for verification: quiet, the threads of
    $OMP_NUM_THREADS."""
    ort = require("onnxruntime", "to verify exported graphs")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = int(os.environ.get("OMP_NUM_THREADS", 0) or 0)
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


def check_finite(name: str, reference: torch.Tensor) -> None:
    """A reference with NaN or inf cannot vouch for anything (and uint8 rounding would hide it)."""
    if not bool(torch.isfinite(reference).all()):
        raise ExportError(f"{name}: PyTorch itself gives NaN or inf for this model (are its weights "
                          "finite?); nothing to verify against")


def differences(got: np.ndarray, want: np.ndarray, pixel_levels: bool = True) -> dict:
    """How far `got` is from the reference `want` (numpy, in the output's dtype): uint8 outputs in
    levels; float outputs absolute and relative to max(1, max |want|), and for images (with
    `pixel_levels`) how many uint8 pixels would change. A NaN on either side makes the difference NaN,
    which no tolerance accepts."""
    if want.dtype == np.uint8:
        levels = np.abs(got.astype(np.int32) - want.astype(np.int32))
        return {"max_levels": int(levels.max()), "within_one_level": float((levels <= 1).mean())}
    worst = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max())  # NaN propagates
    scale = max(1.0, float(np.abs(want.astype(np.float64)).max()))
    result = {"max_abs_diff": worst, "max_rel_diff": worst / scale}
    if pixel_levels and got.ndim == 4:  # an image: how many uint8 pixels would change
        levels = np.abs(to_uint8(got).astype(np.int32) - to_uint8(want).astype(np.int32))
        result["within_one_level"] = float((levels <= 1).mean())
    return result


def merge(worst: dict, new: dict) -> None:
    """Keep the worst value per key over batches; a NaN, once seen, stays (min/max would drop it)."""
    for key, value in new.items():
        pick = min if key == "within_one_level" else max
        if key not in worst or value != value:
            worst[key] = value
        elif worst[key] == worst[key]:
            worst[key] = pick(worst[key], value)


def enforce(report: dict, tol: Tolerance, spec: ExportSpec, runtime: str = "onnxruntime",
             reference: str = "PyTorch") -> None:
    """Raise ExportError at the first output beyond tolerance; NaN never passes (`not (x <= tol)`)."""
    versus = f"{runtime} differs from {reference}"
    for name, result in report.items():
        if not result.get("max_rel_diff", 0.0) <= tol.max_diff:
            raise ExportError(f"{name}: {versus} by {result['max_abs_diff']:.3g} "
                              f"(tolerance {tol.max_diff:g}{' fp16' if spec.fp16 else ''})")
        if not result.get("max_levels", 0) <= tol.max_levels:
            raise ExportError(f"{name}: {versus} by {result['max_levels']} "
                              f"uint8 levels (tolerance {tol.max_levels})")
        if not result.get("within_one_level", 1.0) >= tol.min_within_one:
            raise ExportError(f"{name}: only {100 * result['within_one_level']:.2f} % of uint8 pixels "
                              f"within one level of {reference} (need {100 * tol.min_within_one:g} %)")
