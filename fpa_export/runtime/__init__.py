"""Runtimes behind one interface (`Sampler`): torch eager / CUDA graphs, onnxruntime, TensorRT.

    from fpa_export.runtime import make_sampler
    sampler = make_sampler("ckpt.pt", backend="auto", device="cpu", precision="fp32")
    images = sampler(z)                   # (B, latent) → (B, C, S, S) float32 on the CPU, in [-1, 1]
    updates, partials = sampler.steps(z)  # (B, T, C, S, S) each

Importing this package is cheap (names only); torch and the runtimes load on first use.
"""
from .names import BACKENDS, PRECISIONS, PURPOSES

__all__ = ["Sampler", "make_sampler", "choose_backend", "available_backends", "cache_dir", "open_model",
           "BACKENDS", "PRECISIONS", "PURPOSES"]

_LAZY = {"Sampler": ".base", "make_sampler": ".factory", "choose_backend": ".factory",
         "available_backends": ".factory", "cache_dir": ".cache", "open_model": ".modelfile"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
