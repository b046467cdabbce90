"""`export_onnx`: checkpoint → verified, self-describing ONNX graph + JSON sidecar (reused when nothing
changed).

Steps: load the checkpoint; trace the spec's module with the chosen exporter (a batch of 2, so the batch
axis stays symbolic); optionally rewrite it to mixed float16 (`fp16.py`); onnx.checker; compare with
PyTorch in onnxruntime, in memory (`verify.py`); embed the record — config, spec, versions, checkpoint
sha256 and the verification figures just measured — in the model's metadata (`onnx_meta.py`); write
the graph and then its sidecar (the same record, human-readable), each atomically.

Exporter: TorchScript while torch still ships it (0.5–3 s for the default model; dynamo took
15–100 s), else dynamo; both stay selectable. Temporaries of killed exports are swept first.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import hashlib
import io
import logging
from pathlib import Path
import time
from typing import Callable, Optional
import warnings

import torch

from fpa_export.common.atomic import atomic_write, check_outputs, check_replaceable, check_suffix
from fpa_export.common.errors import MissingExtra, reraise_interrupt
from fpa_export.models import FPAGenerator, describe, load_checkpoint
from fpa_export.loading import resolve_checkpoint
from .fp16 import to_mixed_fp16
from .onnx_meta import embed_record
from .sidecar import (ExportError, check_writable, has_our_sidecar, library_versions, read_export_record,
                      reusable, sha256_file, sidecar_path, write_sidecar)
from .spec import INPUT_NAME, BATCH, ExportSpec
from .tempfiles import sweep_stale_temporaries
from .verify import Tolerance, check_model, compare_with_torch, import_onnx

from .options import DEFAULT_OPSET, EXPORTERS  # noqa: E402,F401
TRACE_BATCH = 2  # with batch 1 the exporters may pin the batch axis


def default_exporter() -> str:
    """'torchscript' while this torch still has that exporter (seconds instead of a minute, and the
    graphs are verified the same way), else 'dynamo' (the only one left in future torch versions)."""
    utils = getattr(torch.onnx, "utils", None)
    return "torchscript" if callable(getattr(utils, "export", None)) else "dynamo"


DEFAULT_EXPORTER = default_exporter()


@dataclass
class ExportResult:
    path: Path                     # the .onnx file
    sidecar: Path                  # its JSON sidecar
    spec: ExportSpec
    max_abs_diff: dict = field(default_factory=dict)  # output name → max |onnxruntime − PyTorch|
    reused: bool = False           # True when an identical earlier export was kept
    report: dict = field(default_factory=dict)        # the full verification report


def _exported(path: Path) -> bool:
    """Whether `path` is a graph of ours, to be rebuilt: our sidecar is beside it (beside a damaged
    export too), or its metadata holds our record (checked or, for a graph edited since, not)."""
    from fpa_export.common.errors import FpaError
    from .onnx_meta import GraphModified

    if has_our_sidecar(path):
        return True
    try:
        return read_export_record(path) is not None
    except GraphModified:  # our record, in a graph edited since: rebuilt as before
        return True
    except FpaError:  # not a graph at all
        return False


def default_output(checkpoint: Path, spec: ExportSpec) -> Path:
    """<checkpoint stem>-<graph>[-fp16][-uint8][-rgb][-lstmop].onnx in the working directory."""
    tags = ([spec.graph] + ["fp16"] * spec.fp16 + ["uint8"] * spec.uint8 + ["rgb"] * spec.rgb
            + ["lstmop"] * (spec.lstm == "op"))
    return Path.cwd() / f"{Path(checkpoint).stem}-{'-'.join(tags)}.onnx"


def export_onnx(checkpoint=None, out=None, graph: str = "image", fp16: bool = False,
                opset: int = DEFAULT_OPSET, exporter: Optional[str] = None, uint8: bool = False,
                lstm: str = "unrolled", verify: bool = True, force: bool = False,
                progress: Optional[Callable[[str], None]] = None, rgb: bool = False,
                atol: Optional[float] = None) -> ExportResult:
    """Export one graph of `checkpoint` (None: the embedded default model) to ONNX and verify it.

    `rgb`: a greyscale model's image repeated to three channels. `atol`: the float tolerance of the
    verification instead of the default (1e-4, fp16 2e-2). `progress(stage)`, when given, is called
    as each stage starts (for a progress display).
    """
    progress = progress or (lambda stage: None)
    exporter = exporter or default_exporter()
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    checkpoint = Path(resolve_checkpoint(checkpoint))
    generator, ckpt = load_checkpoint(checkpoint)  # CheckpointError: one line, before any work
    spec = ExportSpec(generator.config, graph=graph, fp16=fp16, uint8=uint8, rgb=rgb, lstm=lstm)
    Tolerance.for_spec(spec, atol)  # a bad --atol fails now, not after the export
    out = Path(out) if out is not None else default_output(checkpoint, spec)
    check_writable(out)
    check_suffix(out, (".onnx",), "graph", ExportError)
    check_outputs({"the graph": out, "its sidecar": sidecar_path(out)}, {"the checkpoint": checkpoint},
                  ExportError)
    if not force:
        check_replaceable(out, "a graph exported by fpa-export", _exported, "pass --force to replace it",
                          ExportError)
        check_replaceable(sidecar_path(out), "the sidecar of a graph exported by fpa-export",
                          lambda path: has_our_sidecar(out), "pass --force to replace it", ExportError)
    sweep_stale_temporaries(out.parent)
    inputs = {"checkpoint_sha256": sha256_file(checkpoint), "spec": spec.to_dict(), "opset": opset,
              "exporter": exporter, "verify": verify, "atol": atol,
              "versions": library_versions("torch", "onnx", "onnxscript", "onnxruntime")}
    previous = None if force else reusable(out, inputs)
    if previous is not None:
        if previous.get("record_source") == "metadata":  # the graph carries its record; restore the copy
            write_sidecar(out, {k: v for k, v in previous.items() if k != "record_source"})
        report = previous.get("results", {}).get("verification", {})
        return ExportResult(out, sidecar_path(out), spec, _max_abs(report), True, report)

    start = time.perf_counter()
    model, report = _build_verified(generator, spec, opset, exporter, verify, atol, progress)
    record = {"kind": "onnx", "checkpoint": checkpoint.name, "inputs": inputs,
              "config": spec.config.to_dict(), "describe": describe(ckpt),
              "results": {"verification": report, "verified": verify,
                          "seconds": round(time.perf_counter() - start, 2)}}
    embed_record(model, record)  # the graph carries its own record (the checkpoint's name, no path)
    model_bytes = model.SerializeToString()
    progress("writing")
    atomic_write(out, lambda handle: handle.write(model_bytes))
    write_sidecar(out, {**record, "checkpoint": str(checkpoint),
                        "output": {"sha256": hashlib.sha256(model_bytes).hexdigest(),
                                   "bytes": len(model_bytes)}})
    return ExportResult(out, sidecar_path(out), spec, _max_abs(report), False, report)


def _build_verified(generator: FPAGenerator, spec: ExportSpec, opset: int, exporter: str,
                    verify: bool, atol: Optional[float], progress: Callable[[str], None]):
    """(onnx.ModelProto, verification report): traced, rewritten, checked and compared in memory,
    nothing written yet."""
    progress(f"tracing with {exporter}")
    model = trace(generator, spec, opset, exporter)
    check_opset(model, opset, exporter)
    declare_shapes(model, spec)
    if spec.fp16:
        progress("float16 rewrite")
        model = to_mixed_fp16(model)
    progress("onnx.checker")
    check_model(model)
    if not verify:
        return model, {}
    progress("onnxruntime vs PyTorch")
    return model, compare_with_torch(model.SerializeToString(), spec, generator, atol)


def trace(generator: FPAGenerator, spec: ExportSpec, opset: int = DEFAULT_OPSET,
          exporter: str = DEFAULT_EXPORTER):
    """The float32 onnx.ModelProto of `spec` for `generator` (weights shared, generator unchanged)."""
    module = spec.module(generator).eval()
    z = spec.sample_input(TRACE_BATCH)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                return _trace_dynamo(module, z, spec, opset)
            return _trace_torchscript(module, z, spec, opset)
    except ImportError as err:
        reraise_interrupt(err)
        raise MissingExtra(err.name or "onnx", "onnx", "by the ONNX exporters") from None
    except torch.onnx.errors.OnnxExporterError as err:
        reraise_interrupt(err)  # torch wraps a Ctrl-C during the dynamo export in its own error
        first = (str(err).strip().splitlines() or ["no message"])[0]
        raise ExportError(f"the {exporter} exporter failed: {first}") from None


def declare_shapes(model, spec: ExportSpec) -> None:
    """Write the spec's shapes (symbolic batch, static C, S, T) onto the graph's inputs and outputs:
    the TorchScript exporter leaves the static dims unnamed, and tools that check an input's shape
    before running it (FID tools, TensorRT parsers, model viewers) read these declarations."""
    declared = {t.name: t for t in spec.inputs + spec.outputs}
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name not in declared:
            continue
        dims = value.type.tensor_type.shape.dim
        wanted = declared[value.name].shape
        if len(dims) != len(wanted):
            raise ExportError(f"{value.name}: the exporter produced rank {len(dims)}, "
                              f"the spec says {len(wanted)}")
        for dim, size in zip(dims, wanted):
            if size == BATCH:
                dim.dim_param = BATCH
            else:
                dim.dim_value = int(size)


def check_opset(model, opset: int, exporter: str) -> None:
    """The exporters may quietly keep another opset than asked for (dynamo builds at 18 and converts;
    TorchScript stops at 20); the sidecar must not claim one the file does not have."""
    found = {entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")}
    if found != {opset}:
        raise ExportError(f"the {exporter} exporter produced opset {sorted(found)}, not {opset}; "
                          f"choose another --opset (or --exporter)")


def _trace_torchscript(module, z, spec: ExportSpec, opset: int):
    onnx = import_onnx()
    buffer = io.BytesIO()
    torch.onnx.export(module, (z,), buffer, dynamo=False, opset_version=opset,
                      input_names=spec.input_names, output_names=spec.output_names,
                      dynamic_axes={t.name: {0: BATCH} for t in spec.inputs + spec.outputs},
                      do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def _trace_dynamo(module, z, spec: ExportSpec, opset: int):
    import onnxscript  # noqa: F401  (the dynamo exporter needs it; fail early with our message)

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # no torchvision/progress chatter
    program = torch.onnx.export(module, (z,), dynamo=True, opset_version=opset, verbose=False,
                                input_names=spec.input_names, output_names=spec.output_names,
                                dynamic_shapes={INPUT_NAME: {0: torch.export.Dim(BATCH, min=1)}})
    return program.model_proto


def _max_abs(report: dict) -> dict:
    return {name: r["max_abs_diff"] if "max_abs_diff" in r else r.get("max_levels")
            for name, r in report.items()}


