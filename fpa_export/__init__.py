"""fpa-export: turn Fast Weight Painter checkpoints into fast samplers, ONNX/TensorRT graphs and GIFs.

Public API: `load_generator(path=None, device="cpu")`. Importing this package is cheap (torch is
imported on first use of `load_generator`), so the command lines can answer `--help` at once.
"""
from .common.version import PACKAGE_VERSION as __version__

__all__ = ["load_generator", "__version__"]


def __getattr__(name):
    if name == "load_generator":
        from .loading import load_generator
        return load_generator
    raise AttributeError(f"module 'fpa_export' has no attribute {name!r}")
