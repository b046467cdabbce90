"""The `Sampler` interface every runtime implements: latents in, images (and painting steps) out.

All backends agree on the boundary: z is a float32 torch tensor (B, latent_size) on any device; images
come back as float32 torch tensors (B, C, S, S) on the CPU, in [-1, 1]; `steps(z)` returns the rank-1
updates and partial sums (B, T, C, S, S) each (docs/MODEL.md §4), or raises NotImplementedError where the
backend has no steps graph.

`images_array(z)` is the same boundary in numpy (float32 arrays in and out): what sampling uses, so that
a backend that needs no torch (onnxruntime on the CPU) runs without importing it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Optional

import numpy as np

from fpa_export.common.errors import FpaError
from fpa_export.models import FPAConfig


class Sampler(ABC):
    """z (B, latent_size) → images (B, C, S, S) in [-1, 1], float32 on the CPU."""

    name: str = "sampler"    # backend name, e.g. "torch-cpu", "onnxruntime-cpu"
    config: FPAConfig        # the generator's configuration
    precision: str = "fp32"  # fp32 | bf16 | fp16 (runtime.precision)
    precision_record: Optional[dict] = None  # set by make_sampler: the precision and its probe figures
    parallel_batches: bool = True  # may paint batches from several threads at once

    @property
    def latent_size(self) -> int:
        return self.config.latent_size

    def __call__(self, z):
        return self._images(self.check_latents(z))

    def images_array(self, z: np.ndarray) -> np.ndarray:
        """z float32 (B, latent_size) numpy → images float32 (B, C, S, S) numpy in [-1, 1]."""
        import torch

        with torch.inference_mode():
            return self(z).numpy()

    def steps(self, z):
        """(updates, partials), each (B, T, C, S, S) float32 on the CPU."""
        return self._steps(self.check_latents(z))

    @abstractmethod
    def _images(self, z):
        """z already checked: float32 (B, latent_size), B ≥ 1."""

    def _steps(self, z):
        raise NotImplementedError(f"the {self.name} backend has no steps graph; "
                                  "use a checkpoint with the torch backend, or export --graph steps")

    def check_latents(self, z):
        """Accept a (B, latent_size) tensor or array; return it as a float32 tensor (device unchanged)."""
        import torch

        if isinstance(z, np.ndarray):
            z = torch.from_numpy(z)
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        self.check_shape(tuple(z.shape))
        return z.float()

    def check_shape(self, shape: tuple) -> None:
        """FpaError unless `shape` is (batch ≥ 1, latent_size)."""
        if len(shape) != 2 or shape[1] != self.latent_size or shape[0] < 1:
            raise FpaError(f"z must have shape (batch ≥ 1, {self.latent_size}), got {shape}")

    def __repr__(self) -> str:
        c = self.config
        return (f"<{type(self).__name__} {self.name}: {c.channels}×{c.image_size}×{c.image_size}, "
                f"{c.num_steps} steps, latent {c.latent_size}>")
