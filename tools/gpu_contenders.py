"""The contenders of `tools/gpu_check.py`: how each (backend, precision) sampler is built, and how one
is measured (images/s per batch size, batch-1 latency, difference from fp32 eager on the same latents).

A builder returns (callable z → images float32 on the CPU, a short "via" text saying how the precision
was obtained) or raises `Skip` with the reason (a CUDA-only backend on the CPU, a package not
installed). Low precision uses the package's `make_sampler(..., precision=)` where it exists; before
that argument exists, torch contenders fall back to `torch.autocast` (said in the "via" column).
"""
from __future__ import annotations

from dataclasses import dataclass
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

import bench_common as common

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class Skip(Exception):
    """A contender that cannot run here (not an error)."""


@dataclass
class Target:
    """What a builder needs: the model (checkpoint and generator), the device, a scratch folder."""
    label: str
    checkpoint: Path
    generator: object
    device: str
    workdir: Path
    max_batch: int

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")


def _make_sampler():
    from fpa_export.runtime import make_sampler

    return make_sampler


def _autocast(sampler, device: str, precision: str) -> Callable:
    dtype, kind = DTYPES[precision], torch.device(device).type

    def call(z):  # cache off: a CUDA graph captured under autocast must not keep cached casts
        with torch.autocast(kind, dtype=dtype, cache_enabled=False):
            return sampler(z)
    return call


def torch_builder(mode: str) -> Callable:
    """eager | cuda-graphs | compile, through make_sampler(backend="torch")."""
    options = {"eager": {"cuda_graphs": False}, "cuda-graphs": {"cuda_graphs": True},
               "compile": {"compile": True, "cuda_graphs": False}}[mode]

    def build(target: Target, precision: str):
        if mode == "cuda-graphs" and not target.on_cuda:
            raise Skip("needs CUDA")
        if mode == "compile" and not target.on_cuda:
            raise Skip("CUDA only here (compiling on a CPU takes minutes)")
        make_sampler = _make_sampler()
        if precision == "fp32":
            return make_sampler(target.generator, backend="torch", device=target.device, **options), "fp32"
        if common.api_has_precision(make_sampler):
            return (make_sampler(target.generator, backend="torch", device=target.device,
                                 precision=precision, **options), f"precision={precision!r}")
        sampler = make_sampler(target.generator, backend="torch", device=target.device, **options)
        return _autocast(sampler, target.device, precision), "torch.autocast (no precision= yet)"
    return build


def onnx_builder(cuda_graph: bool) -> Callable:
    """onnxruntime-gpu with IO binding (and optionally its CUDA graphs)."""

    def build(target: Target, precision: str):
        from fpa_export.runtime import available_backends

        if not target.on_cuda:
            raise Skip("needs CUDA")
        if "onnx" not in available_backends(target.device):
            raise Skip("onnxruntime-gpu not installed (no CUDA provider)")
        make_sampler = _make_sampler()
        via = "IO binding" + (", CUDA graph" if cuda_graph else "")
        if precision == "fp32":
            return make_sampler(target.checkpoint, backend="onnx", device=target.device,
                                cuda_graph=cuda_graph), via
        if precision == "fp16":
            from fpa_export.export import export_onnx

            path = export_onnx(target.checkpoint, target.workdir / f"{target.label}-fp16.onnx",
                               fp16=True, exporter="torchscript").path
            return make_sampler(path, backend="onnx", device=target.device,
                                cuda_graph=cuda_graph), f"fp16 graph, {via}"
        if common.api_has_precision(make_sampler):
            return (make_sampler(target.checkpoint, backend="onnx", device=target.device,
                                 cuda_graph=cuda_graph, precision=precision), f"precision=, {via}")
        raise Skip("no bf16 ONNX graph in this package")
    return build


def trt_build(target: Target, precision: str):
    from fpa_export.runtime import available_backends

    if not target.on_cuda:
        raise Skip("needs CUDA")
    if "trt" not in available_backends(target.device):
        raise Skip("TensorRT not importable")
    if precision == "bf16":
        raise Skip("no bf16 engine path in this package")
    from fpa_export.export import build_engine

    engine = build_engine(target.checkpoint, target.workdir / f"{target.label}-{precision}.plan",
                          fp16=precision == "fp16", max_batch=target.max_batch, exporter="torchscript")
    return _make_sampler()(engine.path, backend="trt", device=target.device), f"engine {precision}"


# Order matters: under the time budget, earlier contenders run first (eager fp32 is the reference).
BACKENDS = {
    "torch eager": torch_builder("eager"),
    "torch CUDA graphs": torch_builder("cuda-graphs"),
    "onnxruntime-gpu": onnx_builder(cuda_graph=False),
    "onnxruntime-gpu CUDA graph": onnx_builder(cuda_graph=True),
    "TensorRT": trt_build,
    "torch.compile": torch_builder("compile"),
}


def measure(call: Callable, latents: dict[int, torch.Tensor], min_seconds: float,
            max_reps: int = 50) -> dict:
    """Per batch size: two warm-up calls (captures, compiles), then ≥ 3 timed calls until min_seconds;
    medians. Returns images/s per batch, the batch-1 latency (ms) and the outputs of each batch."""
    rates, outputs, latency = {}, {}, None
    for batch, z in latents.items():
        outputs[batch] = call(z)
        call(z)
        times: list[float] = []
        while len(times) < 3 or (sum(times) < min_seconds and len(times) < max_reps):
            start = time.perf_counter()
            call(z)  # images come back on the CPU: the time includes the device → host copy
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        rates[batch] = batch / seconds
        if batch == 1:
            latency = 1000 * seconds
    return {"images_per_s": rates, "latency_ms_b1": latency, "outputs": outputs}


def difference(images: torch.Tensor, reference: torch.Tensor) -> dict:
    """Max abs difference and uint8 level figures of `images` against the fp32 eager reference."""
    levels = common.level_stats(common.to_levels(reference), common.to_levels(images))
    return {"max_abs_diff": float((images.float() - reference).abs().max()),
            "max_level_diff": levels["max_level"],
            "over_2_levels_pct": 100 * (1 - levels["within_2_fraction"])}
