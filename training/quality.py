"""Quality metric logged during training (and used to keep best.pt): a Fréchet distance (lower is better)
between `count` real images and `count` samples of the EMA generator, on one of two feature sets:

- `pixel` (default, cheap): the images themselves, clamped to [0, 1] like saved images and average-pooled
  to 8×8 per channel (64·C numbers). It sees coarse layout and contrast only: it tells a collapsed or
  blank generator from a working one, but it is not an FID.
- `rvgg`: the random-network features of `fpa_export.fd.frechet` (the metric of `fpa-fd`, extractor seed 0,
  images brought to 64 px). Slower (one random VGG-19 pass per image), much more sensitive.

Neither is comparable with published Inception FIDs, and numbers are comparable only between runs with
the same metric, image size, channels and `count`. The distance itself is `fpa_export.fd.frechet`'s.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fpa_export.fd.frechet import FeatureStats, RunningStats, compute_stats, frechet_distance

METRICS = ("pixel", "rvgg")
POOLED_SIZE = 8
RVGG_RESOLUTION = 64


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    """(N, C, S, S) → (N, C·8·8) float64: clamp to [0, 1], average-pool to 8×8."""
    pooled = F.adaptive_avg_pool2d(images.float().clamp(0, 1), POOLED_SIZE)
    return pooled.flatten(1).double()


def image_stats(batches, metric: str, device="cpu") -> FeatureStats:
    """Feature statistics of an iterable of (B, C, S, S) batches in [0, 1] (clamped first)."""
    batches = (batch.float().clamp(0, 1) for batch in batches)
    if metric == "rvgg":
        return compute_stats(batches, seeds=(0,), resolution=RVGG_RESOLUTION, device=device).stats[0]
    running = RunningStats()
    for batch in batches:
        running.update(pixel_features(batch.cpu()))
    return running.result()


@torch.no_grad()
def generator_fd(generator, real: FeatureStats, metric: str, count: int, batch_size: int = 250,
                 device="cpu", seed: int = 0) -> float:
    """FD between the real statistics and `count` samples of `generator` on fixed seeded latents."""
    rng = torch.Generator().manual_seed(seed)

    def samples():
        for start in range(0, count, batch_size):
            z = torch.randn(min(batch_size, count - start), generator.latent_size, generator=rng)
            yield generator(z.to(device))
    return frechet_distance(real, image_stats(samples(), metric, device))
