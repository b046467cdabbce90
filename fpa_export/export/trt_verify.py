"""TensorRT engines verified like ONNX graphs: run the freshly built engine and onnxruntime (CPU) on the
same fixed probe batch, compare every output, refuse the engine beyond tolerance.

The reference is the ONNX graph the engine was built from, run by onnxruntime — itself verified
against PyTorch when it was exported — so a wrong parse, a precision the builder chose on its own or a
broken kernel shows up here. Tolerances: those of the graph (`verify.Tolerance`: float32 1e-4, fp16
2e-2, uint8 one level / six levels fp16); with `--tf32` the float tolerance is at least 1e-2 (TF32
keeps 10 mantissa bits). Comparisons are `not (difference <= tolerance)`, so NaN fails.

Status: TensorRT cannot be installed where this was written, so `run_plan` (the CUDA part) has not run
on a GPU; the decision logic around it is tested with stand-ins (tests/test_export_trt.py).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from .sidecar import ExportError
from .spec import INPUT_NAME, ExportSpec
from .verify import Tolerance, cpu_session, differences, enforce, merge

PROBE_SEED = 3
TF32_MAX_DIFF = 1e-2


def probe_batch(min_batch: int, max_batch: int) -> int:
    """An odd batch of 7 where the profile allows it, else the nearest allowed size."""
    return min(max(7, min_batch), max_batch)


def engine_tolerance(spec: ExportSpec, tf32: bool) -> Tolerance:
    tolerance = Tolerance.for_spec(spec)
    if tf32:
        tolerance = replace(tolerance, max_diff=max(tolerance.max_diff, TF32_MAX_DIFF))
    return tolerance


def verify_engine(plan: bytes, onnx_path: Path, spec: ExportSpec, batch: int, tf32: bool = False,
                  run_engine: Optional[Callable] = None) -> dict:
    """{output name: differences} of the engine against onnxruntime on one probe batch; raises
    ExportError beyond tolerance. `run_engine(plan, spec, z) -> [np.ndarray]` (default `run_plan`)."""
    z = spec.sample_input(batch, PROBE_SEED).numpy()
    expected = cpu_session(onnx_path).run(spec.output_names, {INPUT_NAME: z})
    got = (run_engine or run_plan)(plan, spec, z)
    report: dict[str, dict] = {}
    for tensor, engine_out, reference in zip(spec.outputs, got, expected):
        engine_out = np.asarray(engine_out)
        if engine_out.shape != reference.shape:
            raise ExportError(f"{tensor.name}: TensorRT gave shape {engine_out.shape}, onnxruntime "
                              f"{reference.shape} at batch {batch}")
        # float engine outputs are held to the float tolerance only (as before; TF32 would fail the
        # pixel rule of fp32 graphs): the within-one-level share is not computed for them
        merge(report.setdefault(tensor.name, {}), differences(engine_out, reference, pixel_levels=False))
    enforce(report, engine_tolerance(spec, tf32), spec, runtime="TensorRT", reference="onnxruntime")
    return report


def run_plan(plan: bytes, spec: ExportSpec, z: np.ndarray) -> list[np.ndarray]:
    """Deserialize `plan` on GPU 0 and run it once on `z` (TensorRT 10/11 name-based tensor API)."""
    import torch

    from .trt_build import import_tensorrt

    trt = import_tensorrt()
    dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
              trt.DataType.UINT8: torch.uint8}
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
    if engine is None:
        raise ExportError("TensorRT cannot load the engine it has just built")
    context = engine.create_execution_context()
    inputs = torch.from_numpy(z).cuda().contiguous()
    if not context.set_input_shape(INPUT_NAME, tuple(inputs.shape)):
        raise ExportError(f"TensorRT refused the probe input shape {tuple(inputs.shape)}")
    context.set_tensor_address(INPUT_NAME, inputs.data_ptr())
    outputs = []
    for name in spec.output_names:
        out = torch.empty(tuple(context.get_tensor_shape(name)), device="cuda",
                          dtype=dtypes[engine.get_tensor_dtype(name)])
        context.set_tensor_address(name, out.data_ptr())
        outputs.append(out)
    stream = torch.cuda.current_stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise ExportError("TensorRT failed to run the engine on the probe batch")
    stream.synchronize()
    return [out.cpu().numpy() for out in outputs]
