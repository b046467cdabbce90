"""`make_sampler`: one entry point from a model file (or the embedded default) to a runtime.

    model: None (embedded default model) | checkpoint .pt | exported .onnx | TensorRT .plan/.engine
           | an FPAGenerator instance
    backend: "auto" | "torch" | "onnx" | "trt"

"auto" picks by what the file is (.onnx → onnxruntime, .plan → TensorRT); for a checkpoint it picks
onnxruntime on the CPU when installed (the fastest CPU backend measured in docs/BENCHMARKS.md) and
torch with CUDA graphs on a GPU. A checkpoint given to the onnx backend is exported once into a cache
folder keyed by the checkpoint's hash ($FPA_EXPORT_CACHE, default ~/.cache/fpa-export).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Union

import torch

from fpa_export.common.errors import FpaError
from fpa_export.models import FPAGenerator
from fpa_export.loading import load_generator, resolve_checkpoint
from .base import Sampler

BACKENDS = ("auto", "torch", "onnx", "trt")
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
CPU_ONNX_LSTM = "op"  # on the CPU, onnxruntime runs its fused LSTM op faster than the unrolled cell

ModelLike = Union[None, str, os.PathLike, FPAGenerator]


def make_sampler(model: ModelLike = None, backend: str = "auto", device: str = "cpu",
                 **options) -> Sampler:
    """A `Sampler` for `model` on `device` ("cpu", "cuda", "cuda:1").

    Options: torch — cuda_graphs (default: on for CUDA), compile; onnx — cuda_graph, threads, lstm
    ("unrolled" | "op", for checkpoints), exporter.
    """
    if backend not in BACKENDS:
        raise FpaError(f"backend must be one of {BACKENDS}, got {backend!r}")
    kind = _model_kind(model)
    if backend == "auto":
        backend = _auto_backend(kind, torch.device(device))
    if kind == "onnx" and backend != "onnx" or kind == "trt" and backend != "trt":
        raise FpaError(f"{model}: a .{kind} file runs only with backend={kind!r}")
    if backend == "torch":
        return _torch_sampler(model, device, **options)
    if backend == "onnx":
        return _onnx_sampler(model, kind, device, **options)
    if kind != "trt":
        raise FpaError("backend='trt' needs an engine file: build one with `fpa-export trt`")
    from .trt_backend import TrtSampler

    return TrtSampler(model, device=device if device != "cpu" else "cuda")


def available_backends(device: str = "cpu") -> list[str]:
    """Backends that can run on `device` here (onnx needs onnxruntime; trt needs TensorRT and CUDA)."""
    found = ["torch"]
    if _importable("onnxruntime") and _importable("onnx"):
        from .onnx_backend import cuda_provider_available

        if torch.device(device).type == "cpu" or cuda_provider_available():
            found.append("onnx")
    if torch.device(device).type == "cuda" and _importable("tensorrt"):
        found.append("trt")
    return found


def _model_kind(model: ModelLike) -> str:
    if isinstance(model, FPAGenerator):
        return "generator"
    if model is None:
        return "checkpoint"
    suffix = Path(model).suffix.lower()
    return "onnx" if suffix == ".onnx" else "trt" if suffix in ENGINE_SUFFIXES else "checkpoint"


def _auto_backend(kind: str, device: torch.device) -> str:
    if kind in ("onnx", "trt"):
        return kind
    if device.type == "cpu" and kind == "checkpoint" and "onnx" in available_backends("cpu"):
        return "onnx"
    return "torch"


def _torch_sampler(model: ModelLike, device: str, cuda_graphs: Optional[bool] = None,
                   compile: bool = False) -> Sampler:
    from .torch_backend import TorchSampler

    generator = model if isinstance(model, FPAGenerator) else load_generator(model)
    if cuda_graphs is None:
        cuda_graphs = torch.device(device).type == "cuda" and not compile
    return TorchSampler(generator, device, cuda_graphs=cuda_graphs, compile=compile)


def _onnx_sampler(model: ModelLike, kind: str, device: str, cuda_graph: bool = False,
                  threads: int = 0, lstm: Optional[str] = None, exporter: str = "torchscript") -> Sampler:
    from .onnx_backend import OnnxSampler, spec_from_sidecar

    if kind == "generator":
        raise FpaError("the onnx backend needs a checkpoint or .onnx file, not a generator object")
    if kind == "onnx":
        spec = spec_from_sidecar(Path(model))
        graphs = {spec.graph + "_graph": Path(model)}
        return OnnxSampler(spec.config, device=device, cuda_graph=cuda_graph, threads=threads, **graphs)
    from fpa_export.export import export_onnx
    from fpa_export.models import FPAConfig, read_checkpoint

    checkpoint = Path(resolve_checkpoint(model))
    key = hashlib.sha1(str(checkpoint.resolve()).encode()).hexdigest()[:10]  # the sidecar checks content
    config = FPAConfig.from_dict(read_checkpoint(checkpoint)["config"])
    lstm = lstm or (CPU_ONNX_LSTM if torch.device(device).type == "cpu" else "unrolled")

    def exported(graph: str):
        def export() -> Path:
            out = cache_dir() / f"{checkpoint.stem}-{key}-{graph}-{lstm}-{exporter}.onnx"
            return export_onnx(checkpoint, out, graph=graph, lstm=lstm, exporter=exporter).path
        return export

    return OnnxSampler(config, image_graph=exported("image"), steps_graph=exported("steps"),
                       device=device, cuda_graph=cuda_graph, threads=threads)


def cache_dir() -> Path:
    """Where graphs exported on demand live ($FPA_EXPORT_CACHE, else ~/.cache/fpa-export)."""
    base = os.environ.get("FPA_EXPORT_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fpa-export"


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
