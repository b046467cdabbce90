"""What a MODEL argument is and which weights it holds, so a sample folder can name its model.

Exported graphs and engines are traced back to the checkpoint they came from (through their JSON
sidecars), so the same weights sampled with torch, onnxruntime or TensorRT share one identity; a
float16 export is a different precision and therefore a different identity.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from fpa_export.models import FPAConfig, read_checkpoint
from fpa_export.export.sidecar import config_from_sidecar, read_sidecar, sha256_file
from fpa_export.loading import resolve_checkpoint

ENGINE_SUFFIXES = (".plan", ".engine", ".trt")


def model_kind(model: Optional[str | Path]) -> str:
    """'checkpoint' (None = the embedded default), 'onnx' or 'tensorrt', by file name."""
    if model is None:
        return "checkpoint"
    suffix = Path(model).suffix.lower()
    return "onnx" if suffix == ".onnx" else "tensorrt" if suffix in ENGINE_SUFFIXES else "checkpoint"


def model_config(model: Optional[str | Path]) -> FPAConfig:
    """The FPAConfig of a checkpoint, or of an exported file (from its sidecar)."""
    if model_kind(model) == "checkpoint":
        return FPAConfig.from_dict(read_checkpoint(resolve_checkpoint(model))["config"])
    return config_from_sidecar(model)


def model_identity(model: Optional[str | Path]) -> dict:
    """{"sha256": of the source checkpoint when traceable, else of the file; "kind"; "path";
    "precision": "float32" | "float16"}."""
    kind = model_kind(model)
    path = Path(resolve_checkpoint(model))
    identity = {"kind": kind, "path": "default" if model is None else str(model),
                "precision": "float32"}
    if kind == "checkpoint":
        read_checkpoint(path)  # a one-line CheckpointError for anything else, before any work
        return {**identity, "sha256": sha256_file(path)}
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    sidecar = read_sidecar(path) or {}
    inputs = sidecar.get("inputs", {})
    if kind == "tensorrt" and sidecar.get("onnx"):  # engine → the ONNX graph it was built from
        inputs = {**(read_sidecar(sidecar["onnx"]) or {}).get("inputs", {}), "spec": inputs.get("spec")}
    spec = inputs.get("spec") or {}
    identity["precision"] = "float16" if spec.get("fp16") else "float32"
    return {**identity, "sha256": inputs.get("checkpoint_sha256") or sha256_file(path)}
