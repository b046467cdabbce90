"""fpa-export: turn Fast Weight Painter checkpoints into fast samplers, ONNX/TensorRT graphs and GIFs.

Public API: `load_generator(path=None, device="cpu")`.
"""
from models import PACKAGE_VERSION as __version__
from .loading import load_generator

__all__ = ["load_generator", "__version__"]
