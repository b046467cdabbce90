"""Runtimes behind one interface (`Sampler`): torch eager / CUDA graphs, onnxruntime, TensorRT.

    from fpa_export.runtime import make_sampler
    sampler = make_sampler("ckpt.pt", backend="auto", device="cpu")
    images = sampler(z)                   # (B, latent) → (B, C, S, S) float32 on the CPU, in [-1, 1]
    updates, partials = sampler.steps(z)  # (B, T, C, S, S) each
"""
from .base import Sampler
from .factory import BACKENDS, available_backends, cache_dir, make_sampler

__all__ = ["Sampler", "make_sampler", "available_backends", "cache_dir", "BACKENDS"]
