"""`make_sampler`: the one factory from a model (file, embedded default or generator) to a runtime.

    model: None (embedded default model) | checkpoint .pt | exported .onnx | TensorRT .plan/.engine
           | an FPAGenerator | a `ModelFile` (`runtime.modelfile.open_model`, loaded once per run)
    backend: "auto" | "torch" | "onnx" | "trt"
    precision: None (fp32 for weights, an exported graph's own) | "fp32" | "bf16" | "fp16"
    purpose: None (any) | "images" (sampling, metrics) | "steps" (painting frames for GIFs); a graph
             that cannot serve the purpose is refused at once, before any work

`choose_backend` answers "which runtime for this model kind, purpose, device and precision", for every
command and the API: an exported file runs in its own runtime; a checkpoint runs in onnxruntime on the
CPU in fp32 when it is installed (the fastest CPU fp32 backend measured, docs/BENCHMARKS.md), and in
torch otherwise — torch with CUDA graphs on a GPU, torch with low-precision weights for bf16/fp16 (the
fastest measured for those, docs/SAMPLING.md), and torch for painting steps. A checkpoint given to
onnxruntime is exported once into the content-keyed cache (`runtime.cache`).

A low-precision torch sampler is verified before it is returned: the probe batch is painted in the low
precision and compared with fp32 (`runtime.precision.probe`; the fp32 half is kept by content after
the first run, `runtime.probe_reference`); beyond the tolerance, PrecisionError.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from fpa_export.common.devices import check_device, device_type
from fpa_export.common.errors import FpaError
from fpa_export.common.optional import available
from .base import Sampler
from .modelfile import ModelLike, kind_of, open_model
from .names import BACKENDS, PURPOSES
from .precision import PrecisionError, check_name, check_precision, paint_reference, probe, record

CPU_ONNX_LSTM = "op"  # on the CPU, onnxruntime runs its fused LSTM op faster than the unrolled cell
OPTIONS = {"torch": ("cuda_graphs", "compile"), "onnx": ("cuda_graph", "threads", "lstm", "exporter"),
           "trt": ()}


def make_sampler(model: ModelLike = None, backend: str = "auto", device: str = "cpu",
                 precision: Optional[str] = None, purpose: Optional[str] = None,
                 **options) -> Sampler:
    """A `Sampler` for `model` on `device` ("cpu", "cuda", "cuda:1") in `precision`.

    Options: torch — cuda_graphs (default: on for CUDA), compile; onnx — cuda_graph, threads, lstm
    ("unrolled" | "op", for checkpoints), exporter. `threads` is ignored by the other backends. With
    backend "auto", a torch-only option given (compile, cuda_graphs) picks torch; an option the
    chosen backend does not have is refused with one line.
    torch is imported only by the backends that need it (onnxruntime on the CPU does not).
    """
    if backend not in BACKENDS:
        raise FpaError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if purpose is not None and purpose not in PURPOSES:
        raise FpaError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    device = check_device(device)  # one line for a device this machine lacks, before anything loads
    kind = kind_of(model)
    wanted = {"onnx": "onnx", "tensorrt": "trt"}.get(kind)
    if wanted and backend not in ("auto", wanted):
        name = getattr(model, "label", model)  # a path, or an opened ModelFile
        raise FpaError(f"{name}: a .{Path(str(getattr(model, 'path', model))).suffix.lstrip('.')} "
                       f"file runs only with backend={wanted!r}")
    source = open_model(model)
    if purpose is not None and wanted:
        _check_graph_purpose(source, purpose)
    native = source.native_precision
    precision = check_name(native if precision is None else precision)  # '' is a mistake, not fp32
    if source.kind in ("onnx", "tensorrt") and precision != native:
        raise PrecisionError(f"{source.label} was exported in {native} and runs only in {native}; for "
                             f"--precision {precision} pass the checkpoint it came from"
                             + (" (or export it with --fp16)" if precision == "fp16" else ""))
    if backend == "auto":
        torch_only = any(options.get(name) is not None for name in OPTIONS["torch"])
        backend = "torch" if torch_only and not wanted else choose_backend(source.kind, purpose, device,
                                                                            precision)
    _check_options(backend, options)
    if backend == "torch":
        options.pop("threads", None)
        sampler = _torch_sampler(source, device, precision, **options)
    elif backend == "onnx":
        sampler = _onnx_sampler(source, device, precision, **options)
    elif source.kind != "tensorrt":
        raise FpaError("backend='trt' needs an engine file: build one with `fpa-export trt`")
    else:
        from .trt_backend import TrtSampler

        sampler = TrtSampler(source.path, device=device if device != "cpu" else "cuda")
    sampler.precision = precision
    if sampler.precision_record is None:
        verified = "at export (fpa-export verifies every graph)" if precision != "fp32" else ""
        sampler.precision_record = record(precision, verified=verified)
    return sampler


def _check_options(backend: str, options: dict) -> None:
    known = OPTIONS[backend] + ("threads",)  # threads: ignored where it does not apply
    unknown = sorted(name for name in options if name not in known)
    if unknown:
        others = [b for b, names in OPTIONS.items() if unknown[0] in names]
        hint = f" (an option of backend={others[0]!r})" if others else ""
        raise FpaError(f"backend={backend!r} has no option {unknown[0]!r}{hint}; its options: "
                       f"{', '.join(OPTIONS[backend]) or 'none'}")


def _check_graph_purpose(source, purpose: str) -> None:
    graph = source.spec.graph
    if purpose == "images" and graph != "image":
        raise FpaError(f"{source.label} is a {graph} graph (painting frames, for fpa-gif); sampling "
                       "images needs an image graph: `fpa-export onnx --graph image`, or the checkpoint")
    if purpose == "steps" and graph != "steps":
        raise FpaError(f"{source.label} is an {graph} graph; painting frames need a steps graph: "
                       "`fpa-export onnx --graph steps`, or the checkpoint")


def choose_backend(kind: str, purpose: Optional[str], device, precision: str) -> str:
    """The runtime that runs this model kind for this purpose, device and precision fastest."""
    if kind == "onnx":
        return "onnx"
    if kind == "tensorrt":
        return "trt"
    if (kind == "checkpoint" and purpose != "steps" and precision == "fp32" and device_type(device) == "cpu"
            and "onnx" in available_backends("cpu") and available("onnx")):  # onnx: to export
        return "onnx"
    return "torch"


def available_backends(device: str = "cpu") -> list[str]:
    """Backends that can run on `device` here (onnx needs onnxruntime; trt needs TensorRT and CUDA)."""
    found = ["torch"]
    if available("onnxruntime"):
        from .onnx_backend import cuda_provider_available

        if device_type(device) == "cpu" or cuda_provider_available():
            found.append("onnx")
    if device_type(device) == "cuda" and available("tensorrt"):
        found.append("trt")
    return found


def _torch_sampler(source, device: str, precision: str, cuda_graphs: Optional[bool] = None,
                   compile: bool = False) -> Sampler:
    from .torch_backend import TorchSampler

    check_precision(precision, device)
    if cuda_graphs is None:
        cuda_graphs = device_type(device) == "cuda" and not compile
    sampler = TorchSampler(source.generator, device, cuda_graphs=cuda_graphs, compile=compile,
                           precision=precision)
    if precision != "fp32":
        from .probe_reference import cached_reference

        reference = cached_reference(source.sha256(), device_type(device),
                                     lambda: paint_reference(TorchSampler(source.generator, device)))
        sampler.precision_record = record(precision, probe(sampler, reference, precision))
    return sampler


def _onnx_sampler(source, device: str, precision: str, cuda_graph: bool = False, threads: int = 0,
                  lstm: Optional[str] = None, exporter: str = "torchscript") -> Sampler:
    from .cache import cached_graph
    from .onnx_backend import OnnxSampler

    if source.kind == "generator":
        raise FpaError("the onnx backend needs a checkpoint or .onnx file, not a generator object")
    if source.kind == "onnx":
        graphs = {source.spec.graph + "_graph": source.path}
        return OnnxSampler(source.config, device=device, cuda_graph=cuda_graph, threads=threads,
                           **graphs)
    if precision == "bf16":
        raise PrecisionError("onnxruntime runs no bf16 graphs here; use --backend torch (or auto) for "
                             "--precision bf16")
    check_precision(precision, device)
    lstm = lstm or (CPU_ONNX_LSTM if device_type(device) == "cpu" else "unrolled")
    checkpoint, sha256 = source.checkpoint_path, source.sha256()

    def exported(graph: str):
        return lambda: cached_graph(checkpoint, sha256, graph, lstm, exporter, precision == "fp16")

    return OnnxSampler(source.config, image_graph=exported("image"), steps_graph=exported("steps"),
                       device=device, cuda_graph=cuda_graph, threads=threads)
