"""TensorRT engines from our ONNX graphs, with the TensorRT Python API (versions 10 and 11).

The network is strongly typed (TensorRT 10: the STRONGLY_TYPED creation flag; TensorRT 11: always), so
precision is exactly what the ONNX file says: float32 graphs run in float32 (TF32 is off unless asked
for), `--fp16` graphs run their weight products in float16. One optimisation profile covers the batch
axis (min/opt/max). Engines only run on the TensorRT version and GPU model that built them, so both go
into the sidecar, and the runtime refuses a mismatch with a clear message. Every new engine is run
on a probe batch and compared with onnxruntime before it is written (`trt_verify.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import time
from typing import Optional
import warnings

from fpa_export.common.atomic import atomic_write, check_outputs, check_suffix
from fpa_export.common.errors import not_a_file
from fpa_export.common.optional import require
from .sidecar import (ExportError, check_writable, read_export_record, reusable, sha256_file,
                      sidecar_path, write_sidecar)
from .spec import INPUT_NAME, ExportSpec
from .tempfiles import sweep_stale_temporaries
from . import trt_verify

DEFAULT_OPT_BATCH = 256
from .options import DEFAULT_MAX_BATCH, ENGINE_SUFFIXES  # noqa: E402,F401


def import_tensorrt():
    return require("tensorrt", "to build or run TensorRT engines, on a machine with an NVIDIA GPU")


def tensorrt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


@dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int

    def shapes(self, latent_size: int) -> dict[str, tuple[tuple[int, int], ...]]:
        """{input name: (min shape, opt shape, max shape)} for the optimisation profile."""
        return {INPUT_NAME: ((self.min, latent_size), (self.opt, latent_size), (self.max, latent_size))}


def batch_profile(min_batch: int = 1, opt_batch: Optional[int] = None,
                  max_batch: int = DEFAULT_MAX_BATCH) -> BatchProfile:
    """Validate min ≤ opt ≤ max (all ≥ 1); opt defaults to 256 clamped into [min, max]."""
    if opt_batch is None:
        if not 1 <= min_batch <= max_batch:  # name only what was given: opt follows them
            raise ExportError(f"batch profile needs 1 ≤ --min-batch ≤ --max-batch, got {min_batch} and "
                              f"{max_batch}")
        opt_batch = min(max(DEFAULT_OPT_BATCH, min_batch), max_batch)
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ExportError(f"batch profile needs 1 ≤ min ≤ opt ≤ max, got min={min_batch}, "
                          f"opt={opt_batch}, max={max_batch}")
    return BatchProfile(min_batch, opt_batch, max_batch)


@dataclass
class EngineResult:
    path: Path           # the .plan file
    sidecar: Path
    onnx: Path           # the graph it was built from
    reused: bool
    tensorrt_version: str
    gpu: Optional[str]
    report: dict = field(default_factory=dict)  # engine vs onnxruntime on the probe batch


def build_engine(source, out=None, *, min_batch: int = 1, opt_batch: Optional[int] = None,
                 max_batch: int = DEFAULT_MAX_BATCH, timing_cache=None,
                 workspace_gb: Optional[float] = None, tf32: bool = False, graph: str = "image",
                 fp16: bool = False, exporter: Optional[str] = None, force: bool = False,
                 verify: bool = True) -> EngineResult:
    """Build (or reuse) a TensorRT engine from an exported .onnx, or from a checkpoint (None: the
    embedded default model), which is first exported with `export_onnx(graph=, fp16=, exporter=)`.
    A new engine is compared with onnxruntime on a probe batch (`verify=False` skips that)."""
    profile = batch_profile(min_batch, opt_batch, max_batch)  # option errors first: no TensorRT needed
    trt = import_tensorrt()  # before any slow work
    gpu = _gpu_name()
    if gpu is None:
        raise ExportError("TensorRT needs an NVIDIA GPU with CUDA, and torch sees none here")
    if out is not None:
        check_suffix(out, ENGINE_SUFFIXES, "TensorRT engine", ExportError)  # not the .onnx path
        check_outputs({"the engine": out}, {"the source": source}, ExportError)
        check_writable(Path(out))
    onnx_path = _onnx_source(source, out, graph, fp16, exporter)
    onnx_record = read_export_record(onnx_path)  # the sidecar, or the record inside the .onnx
    if onnx_record is None:
        raise ExportError(f"{onnx_path}: not a graph from `fpa-export onnx` (no record in the file or "
                          "a sidecar); export the graph with it first")
    spec = ExportSpec.from_dict(onnx_record["inputs"]["spec"])
    out = Path(out) if out is not None else onnx_path.with_suffix(".plan")
    check_writable(out)
    check_outputs({"the engine": out, "its sidecar": sidecar_path(out)}, {"the graph": onnx_path},
                  ExportError)
    sweep_stale_temporaries(out.parent)
    inputs = {"onnx_sha256": sha256_file(onnx_path),
              # the source checkpoint, so the engine shares its identity wherever the .onnx later is
              "checkpoint_sha256": (onnx_record.get("inputs") or {}).get("checkpoint_sha256"),
              "spec": spec.to_dict(),
              "profile": vars(profile), "tf32": tf32, "workspace_gb": workspace_gb,
              "tensorrt": str(trt.__version__), "gpu": gpu, "verify": verify}
    if not force and reusable(out, inputs) is not None:
        return EngineResult(out, sidecar_path(out), onnx_path, True, str(trt.__version__), gpu)
    start = time.perf_counter()
    plan, cache_blob = _build_plan(trt, onnx_path, spec, profile, timing_cache, workspace_gb, tf32)
    probe = trt_verify.probe_batch(profile.min, profile.max)
    report = trt_verify.verify_engine(plan, onnx_path, spec, probe, tf32) if verify else {}
    _write_engine(out, plan, timing_cache, cache_blob, {
        "kind": "tensorrt", "onnx": str(Path(onnx_path).resolve()), "inputs": inputs, "config": spec.config.to_dict(),
        "results": {"seconds": round(time.perf_counter() - start, 2), "verification": report,
                    "verified": verify, "onnx_verification": onnx_record.get("results", {})}})
    return EngineResult(out, sidecar_path(out), onnx_path, False, str(trt.__version__), gpu, report)


def _write_engine(out: Path, plan: bytes, timing_cache, cache_blob: bytes, record: dict) -> None:
    """The engine, then the timing cache (a failed cache write must not lose the build), then the
    sidecar, each atomically."""
    atomic_write(out, lambda handle: handle.write(plan))
    if timing_cache and cache_blob:
        try:
            atomic_write(Path(timing_cache), lambda handle: handle.write(cache_blob))
        except OSError as err:
            warnings.warn(f"timing cache not saved: {err}")
    write_sidecar(out, {**record, "output": {"sha256": sha256_file(out), "bytes": len(plan)}})


def network_flags(trt) -> int:
    """Strongly typed: a creation flag in TensorRT 10, the only mode (flag deprecated) in 11."""
    if tensorrt_major(trt) >= 11:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _build_plan(trt, onnx_path: Path, spec: ExportSpec, profile: BatchProfile, timing_cache,
                workspace_gb: Optional[float], tf32: bool) -> tuple[bytes, bytes]:
    """(serialized engine, serialized timing cache or b"")."""
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except TypeError:  # "factory function returned nullptr": no usable CUDA device
        raise ExportError("TensorRT could not create a builder (no usable CUDA device?)") from None
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors[0] if errors else 'unknown error'}")
    config = builder.create_builder_config()
    if workspace_gb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if not tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; float32 graphs stay float32
    optimisation = builder.create_optimization_profile()
    for name, (low, opt, high) in profile.shapes(spec.config.latent_size).items():
        optimisation.set_shape(name, low, opt, high)
    config.add_optimization_profile(optimisation)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_blob = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_blob)
    if cache is None or not config.set_timing_cache(cache, False):
        warnings.warn(f"timing cache {cache_path} does not fit this TensorRT/GPU; starting an empty one")
        config.set_timing_cache(config.create_timing_cache(b""), False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError("TensorRT failed to build the engine (its log above says why)")
    built_cache = config.get_timing_cache() if cache_path is not None else None
    return bytes(plan), bytes(built_cache.serialize()) if built_cache is not None else b""


def _onnx_source(source, out, graph: str, fp16: bool, exporter: Optional[str]) -> Path:
    """An .onnx path as given, or the graph exported from a checkpoint next to `out`."""
    if source is not None and Path(source).suffix.lower() == ".onnx":
        if not Path(source).is_file():
            raise ExportError(not_a_file(source))
        return Path(source)
    from .onnx_export import export_onnx

    onnx_out = Path(out).with_suffix(".onnx") if out is not None else None
    options = {"exporter": exporter} if exporter else {}
    return export_onnx(source, onnx_out, graph=graph, fp16=fp16, **options).path


def _gpu_name() -> Optional[str]:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except (ImportError, RuntimeError):
        return None
