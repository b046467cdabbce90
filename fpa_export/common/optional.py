"""Lazy imports of optional packages, in one place, each with the extra that installs it.

    ort = require("onnxruntime", purpose="to run .onnx graphs")

raises `MissingExtra` (one line with the pip command) when the package is absent. Nothing heavy is
imported at module level anywhere else in the project.
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingExtra, reraise_interrupt

# package → (extra of fpa-export, or None; pip line when the extra alone is not the fix)
EXTRAS: dict[str, tuple[str | None, str | None]] = {
    "onnx": ("onnx", None),
    "onnxscript": ("onnx", None),
    "onnxruntime": ("onnx", "pip install 'fpa-export[onnx]' (CPU) or 'fpa-export[gpu]' (CUDA)"),
    "tensorrt": ("trt", None),
    "imageio_ffmpeg": ("video", None),
    "scipy": ("train", None),
    "sklearn": ("train", None),
    "skimage": ("train", None),
    "mlxtend": ("train", None),
}


# import name → the name a user knows it by
DISPLAY = {"tensorrt": "TensorRT", "imageio_ffmpeg": "imageio-ffmpeg", "sklearn": "scikit-learn",
           "skimage": "scikit-image"}


def require(package: str, purpose: str = "") -> ModuleType:
    """Import `package` (a dotted name is fine) or raise `MissingExtra` naming the install line."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        reraise_interrupt(err)  # Ctrl-C during an extension's import is not an absent package
        root = package.split(".")[0]
        if err.name is not None and err.name.split(".")[0] != root:
            raise  # the package is there but one of *its* imports failed: a real problem, not ours
        extra, pip = EXTRAS.get(root, (None, None))
        raise MissingExtra(DISPLAY.get(root, root), extra, purpose, pip) from None


def available(package: str) -> bool:
    """Whether `package` is installed, found without importing it (cheap enough for `--help` paths)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # a parent package missing, or a module without a spec
        return False
