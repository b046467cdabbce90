"""What a MODEL argument is and which weights it holds, so a sample folder can name its model.

Thin names over `fpa_export.runtime.modelfile`, the one place that decides what a model file is:
exported graphs and engines are traced back to the checkpoint they came from, so the same weights
sampled with torch, onnxruntime or TensorRT share one identity; the precision is part of it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from fpa_export.runtime.modelfile import ENGINE_SUFFIXES, ModelFile, kind_of, open_model  # noqa: F401


def model_kind(model) -> str:
    """'checkpoint' (None = the embedded default), 'onnx', 'tensorrt' (or 'generator')."""
    return kind_of(model)


def model_config(model: Optional[str | Path | ModelFile]):
    """The FPAConfig of a checkpoint, or of an exported file (from its export record)."""
    return open_model(model).config


def model_identity(model: Optional[str | Path | ModelFile], precision: Optional[str] = None) -> dict:
    """{"sha256": of the source checkpoint when traceable, else of the file; "kind"; "path";
    "precision": "fp32" | "bf16" | "fp16"}."""
    return open_model(model).identity(precision)
