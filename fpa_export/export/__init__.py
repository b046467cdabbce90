"""Export layer: unrolled ONNX graphs (verified against PyTorch, self-describing, keyed by JSON sidecars) and TensorRT
engines. See docs/EXPORT.md.

    from fpa_export.export import export_onnx, build_engine
    result = export_onnx("ckpt.pt", graph="image")       # → ExportResult(path, sidecar, max_abs_diff…)

Names are imported on first use, so reading an export record (`fpa_export.export.sidecar`) never pulls
in the exporters (torch.onnx) — running an exported graph stays lean.
"""
import importlib

_HOMES = {
    "onnx_export": ("DEFAULT_EXPORTER", "DEFAULT_OPSET", "EXPORTERS", "ExportResult", "default_exporter",
                    "export_onnx", "trace"),
    "sidecar": ("ExportError", "config_from_sidecar", "read_export_record", "read_sidecar", "sidecar_path",
                "spec_from_record"),
    "spec": ("GRAPHS", "LSTM_MODES", "ExportSpec", "TensorSpec"),
    "trt_build": ("EngineResult", "build_engine"),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}

__all__ = ["export_onnx", "ExportResult", "ExportSpec", "TensorSpec", "ExportError", "GRAPHS",
           "LSTM_MODES", "EXPORTERS", "DEFAULT_EXPORTER", "DEFAULT_OPSET", "trace", "read_sidecar",
           "sidecar_path", "config_from_sidecar", "read_export_record", "spec_from_record",
           "default_exporter", "build_engine", "EngineResult"]


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
