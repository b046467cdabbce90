"""Export layer: unrolled ONNX graphs (verified against PyTorch, self-describing, keyed by JSON sidecars) and TensorRT
engines. See docs/EXPORT.md.

    from fpa_export.export import export_onnx, build_engine
    result = export_onnx("ckpt.pt", graph="image")       # → ExportResult(path, sidecar, max_abs_diff…)
"""
from .onnx_export import (DEFAULT_EXPORTER, DEFAULT_OPSET, EXPORTERS, ExportResult, default_exporter,
                          export_onnx, trace)
from .sidecar import (ExportError, config_from_sidecar, read_export_record, read_sidecar, sidecar_path,
                      spec_from_record)
from .spec import GRAPHS, LSTM_MODES, ExportSpec, TensorSpec
from .trt_build import EngineResult, build_engine

__all__ = ["export_onnx", "ExportResult", "ExportSpec", "TensorSpec", "ExportError", "GRAPHS",
           "LSTM_MODES", "EXPORTERS", "DEFAULT_EXPORTER", "DEFAULT_OPSET", "trace", "read_sidecar",
           "sidecar_path", "config_from_sidecar", "read_export_record", "spec_from_record",
           "default_exporter", "build_engine", "EngineResult"]
