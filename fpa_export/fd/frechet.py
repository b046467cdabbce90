"""The Fréchet distance on features of seeded random networks: statistics and the distance itself.

FD(a, b) = |mu_a − mu_b|² + Tr(S_a) + Tr(S_b) − 2·Tr((S_a^½ S_b S_a^½)^½)  (Heusel et al. 2017), on
the features of `fpa_export.fd.features.fd_features` instead of Inception's. Everything is float64 and pure
torch (symmetric eigendecompositions, no scipy), so training, sampling and the `fpa-fd` command share
it. A `StatsSet` holds one `FeatureStats` per extractor seed plus the metadata that makes two sets
comparable; `to_arrays`/`from_arrays` convert it to and from a dict of numpy arrays (the `.npz`
layout; files are read and written by `fpa_export.fd`).

This is a RELATIVE metric: numbers depend on the extractor id, seeds, resolution and N, and are never
comparable with published (Inception) FID.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fpa_export.common.errors import FpaError
from .features import FD_BASE_WIDTH, FEATURE_VERSION, RandomVGG19, fd_features

STATS_FORMAT = "fpa-fd-stats"
STATS_FORMAT_VERSION = 2
# Version 2 stores the moments under keys of its own: Inception-FID tools (pytorch-fid, clean-fid,
# torch-fidelity) look for `mu` and `sigma`, and must fail on our files (KeyError: 'mu') instead of
# reading random-VGG moments as Inception statistics. Version 1 files (`mu`/`sigma` + our metadata)
# are still read.
STATS_KIND = "random-VGG feature statistics for fpa-fd (NOT Inception FID statistics)"
MEAN_KEY, COV_KEY = "ranvgg_feature_mean", "ranvgg_feature_cov"
MIN_RESOLUTION = 32  # the extractor's smallest input: five poolings leave 2×2 positions at the last layer


@dataclass
class FeatureStats:
    """Mean (D,) and covariance (D, D) of n feature vectors, float64."""
    mu: torch.Tensor
    sigma: torch.Tensor
    n: int
    _sigma_root: Optional[torch.Tensor] = field(default=None, repr=False, compare=False)

    def sigma_root(self) -> torch.Tensor:
        """Σ^½, computed once: a reference set compared with many others pays for it once."""
        if self._sigma_root is None:
            self._sigma_root = _psd_sqrt(self.sigma.to(torch.float64))
        return self._sigma_root


class RunningStats:
    """Mean and covariance accumulated batch by batch in float64 (Chan et al.'s pairwise update, which
    avoids the cancellation of Σxxᵀ − n·μμᵀ)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, None, None

    def update(self, features: torch.Tensor) -> None:
        x = features.detach().to(torch.float64).cpu()           # (B, D)
        if x.shape[0] == 0:
            return
        batch_mean = x.mean(dim=0)
        centred = x - batch_mean
        batch_m2 = centred.T @ centred                           # (D, D)
        if self.n == 0:
            self.n, self.mean, self.m2 = x.shape[0], batch_mean, batch_m2
            return
        total = self.n + x.shape[0]
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (x.shape[0] / total)
        self.m2 = self.m2 + batch_m2 + torch.outer(delta, delta) * (self.n * x.shape[0] / total)
        self.n = total

    def result(self) -> FeatureStats:
        if self.n < 2:
            raise FpaError(f"need at least 2 images for feature statistics, got {self.n}")
        sigma = self.m2 / (self.n - 1)
        return FeatureStats(mu=self.mean.clone(), sigma=(sigma + sigma.T) / 2, n=self.n)


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues → 0).
    No larger cut-off: the features' eigenvalues span many decades, and zeroing those below
    D·eps·λ_max made FD(A, A) 1000× less exact."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """The Fréchet distance between two Gaussians, via the symmetric form S_a^½ S_b S_a^½ (whose
    eigenvalues are real and non-negative, so no imaginary parts to discard as with `sqrtm(S_a S_b)`)."""
    if a.mu.shape != b.mu.shape:
        raise FpaError(f"feature dimensions differ: {a.mu.shape[0]} vs {b.mu.shape[0]}")
    mu_a, mu_b = a.mu.to(torch.float64), b.mu.to(torch.float64)
    sigma_a, sigma_b = a.sigma.to(torch.float64), b.sigma.to(torch.float64)
    root_a = a.sigma_root()
    middle = root_a @ sigma_b @ root_a
    trace_cross = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu_a - mu_b).square().sum() + sigma_a.trace() + sigma_b.trace() - 2 * trace_cross
    return max(float(value), 0.0)


@dataclass
class StatsSet:
    """Statistics of one image set under several extractor seeds, with what makes them comparable."""
    stats: dict[int, FeatureStats]              # extractor seed → statistics
    extractor: str                              # architecture + feature recipe ('ranvgg19-w16-…')
    extractor_ids: dict[int, str]               # seed → full id including the weights' hash
    resolution: int
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return sorted(self.stats)

    @property
    def n(self) -> int:
        return next(iter(self.stats.values())).n

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The `.npz` layout: MEAN_KEY (S, D), COV_KEY (S, D, D) float64, seeds (S,), `kind`, plus
        metadata scalars. No `mu`/`sigma` keys: see STATS_FORMAT_VERSION."""
        seeds = self.seeds
        return {
            "kind": np.asarray(STATS_KIND),
            MEAN_KEY: np.stack([self.stats[s].mu.numpy() for s in seeds]),
            COV_KEY: np.stack([self.stats[s].sigma.numpy() for s in seeds]),
            "seeds": np.asarray(seeds, dtype=np.int64),
            "n": np.asarray(self.n, dtype=np.int64),
            "resolution": np.asarray(self.resolution, dtype=np.int64),
            "extractor": np.asarray(self.extractor),
            "extractor_ids": np.asarray([self.extractor_ids[s] for s in seeds]),
            "source": np.asarray(self.source),
            "format": np.asarray(STATS_FORMAT),
            "format_version": np.asarray(STATS_FORMAT_VERSION, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays, where: str = "statistics") -> "StatsSet":
        """Inverse of `to_arrays`; raises ValueError (one line) for anything else, e.g. Inception stats."""
        keys = set(arrays.keys())
        if "format" not in keys or str(arrays["format"]) != STATS_FORMAT:
            found = _describe_foreign(arrays, keys)
            raise FpaError(f"{where} is not fpa-fd statistics: found {found}; they cannot be compared")
        version = stored_int(arrays, "format_version", where)
        if version > STATS_FORMAT_VERSION:
            raise FpaError(f"{where} has a newer statistics format; upgrade fpa-export")
        mean_key, cov_key = (MEAN_KEY, COV_KEY) if version >= 2 else ("mu", "sigma")  # v1: old names
        if not {mean_key, cov_key} <= keys:
            raise FpaError(f"{where} lacks {mean_key}/{cov_key}; not a complete statistics file")
        missing = sorted({"seeds", "n", "resolution", "extractor", "extractor_ids"} - keys)
        if missing:
            raise FpaError(f"{where} lacks {', '.join(missing)}; not a complete statistics file")
        seeds, ids = np.asarray(arrays["seeds"]), np.asarray(arrays["extractor_ids"])
        mu, sigma = np.asarray(arrays[mean_key]), np.asarray(arrays[cov_key])
        n, resolution = stored_int(arrays, "n", where), stored_int(arrays, "resolution", where)
        if seeds.ndim != 1 or not np.issubdtype(seeds.dtype, np.integer) or ids.shape != seeds.shape:
            raise FpaError(f"{where} records extractor seeds {seeds.tolist()!r} and ids of shape {ids.shape}: "
                           "one whole-number seed per extractor id (damaged or edited); prepare it again")
        if mu.ndim != 2 or mu.shape[0] != len(seeds) \
                or sigma.shape != (len(seeds), mu.shape[1], mu.shape[1]):
            raise FpaError(f"{where} has {len(seeds)} seed(s) and statistics of shapes mu {mu.shape}, "
                           f"sigma {sigma.shape}, which do not fit together (damaged or edited)")
        _check_values(mu, sigma, where)
        seeds = [int(s) for s in seeds]
        if n < 2 or len(set(seeds)) != len(seeds) or resolution < MIN_RESOLUTION:
            raise FpaError(f"{where} records {n} image(s), seeds {seeds} and {resolution} px: statistics "
                           f"need at least 2 images, distinct seeds and ≥ {MIN_RESOLUTION} px (damaged or "
                           "edited); prepare it again")
        stats = {s: FeatureStats(torch.from_numpy(mu[i]).double(), torch.from_numpy(sigma[i]).double(), n)
                 for i, s in enumerate(seeds)}
        return cls(stats=stats, extractor=str(arrays["extractor"]),
                   extractor_ids=dict(zip(seeds, (str(x) for x in ids))), resolution=resolution,
                   source=str(arrays.get("source", "")))


def stored_int(arrays, key: str, where: str) -> int:
    """A whole number stored as a 0-d integer array; one line naming it otherwise."""
    value = np.asarray(arrays[key]) if key in arrays else None
    if value is None or value.ndim != 0 or not np.issubdtype(value.dtype, np.integer):
        shown = "missing" if value is None else f"{value.tolist()!r} ({value.dtype})"
        raise FpaError(f"{where}: its {key} is {shown}, not a whole number (damaged or edited); prepare "
                       "it again")
    return int(value)


def _check_values(mu: np.ndarray, sigma: np.ndarray, where: str) -> None:
    """Real, finite means and covariance matrices: symmetric, no eigenvalue below rounding error of 0."""
    if not (np.issubdtype(mu.dtype, np.floating) and np.issubdtype(sigma.dtype, np.floating)):
        raise FpaError(f"{where} holds statistics of type {mu.dtype}/{sigma.dtype}, not real numbers "
                       "(damaged or edited); prepare it again")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise FpaError(f"{where} holds NaN/inf statistics (damaged or edited); prepare it again")
    for cov in sigma.astype(np.float64):
        scale = max(float(np.abs(cov).max()), 1e-300)
        symmetric = np.abs(cov - cov.T).max() <= 1e-9 * scale
        if not symmetric or np.linalg.eigvalsh(cov).min() < -1e-6 * scale:
            raise FpaError(f"{where} holds a matrix that is not a covariance (not symmetric, or a "
                           "negative eigenvalue; damaged or edited); prepare it again")


def _describe_foreign(arrays, keys: set) -> str:
    """What a statistics file that is not ours looks like, for the one-line refusal."""
    if not {"mu", "sigma"} <= keys:
        return f"keys {sorted(keys)}"
    dim = int(np.asarray(arrays["mu"]).shape[-1]) if np.asarray(arrays["mu"]).ndim else 0
    what = ("Inception FID statistics (2048-d pool features): use them with pytorch-fid, "
            "not fpa-fd") if dim == 2048 else "e.g. Inception FID statistics"
    return f"mu/sigma of {dim}-d features without fpa-fd metadata ({what})"


def fit_resolution(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] → (B, 3, R, R): greyscale repeated to RGB; other sizes resized so the
    shorter side is R (bilinear, antialiased) and centre-cropped, as real images are loaded."""
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    elif images.shape[1] != 3:
        raise FpaError(f"images need 1 or 3 channels, got {images.shape[1]}")
    height, width = images.shape[-2:]
    if (height, width) == (resolution, resolution):
        return images
    scale = resolution / min(height, width)
    size = (max(resolution, round(height * scale)), max(resolution, round(width * scale)))
    images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return images[..., top:top + resolution, left:left + resolution]


def fd_extractors(seeds: Sequence[int], base_width: int = FD_BASE_WIDTH) -> dict[int, RandomVGG19]:
    """One random network per seed (the metric's extractors)."""
    return {int(seed): RandomVGG19(seed=int(seed), base_width=base_width) for seed in seeds}


def extractor_family(base_width: int = FD_BASE_WIDTH) -> str:
    return f"ranvgg19-w{base_width}-avg-he-{FEATURE_VERSION}"


MAX_FEATURE_MEMORY = 4 * 2**30  # bytes of the extractor's largest activations for one batch


def check_feature_memory(resolution: int, batch_size: int) -> None:
    """Refuse, in one line, a resolution and batch whose features would not fit in memory: the first
    block's activations are 64 channels at full resolution, two live at once (float32). `--size
    100000` used to run until the kernel killed the process. Checked by `metric.stats_of` before any
    image is read or painted (both are brought to the resolution first)."""
    need = batch_size * 64 * resolution * resolution * 4 * 2
    if need > MAX_FEATURE_MEMORY:
        raise FpaError(f"features at {resolution} px in batches of {batch_size} need about "
                       f"{need / 2**30:.1f} GiB (at most {MAX_FEATURE_MEMORY / 2**30:.0f}); lower "
                       "--size or --batch-size")


@torch.no_grad()
def compute_stats(batches: Iterable[torch.Tensor], seeds: Sequence[int] = (0,), resolution: int = 64,
                  source: str = "", device: str | torch.device = "cpu",
                  extractors: Optional[dict[int, RandomVGG19]] = None) -> StatsSet:
    """Statistics of image batches (each (B, 1|3, H, W) in [0, 1]) under one extractor per seed.

    Images pass through every extractor batch by batch, so an iterator is consumed once.
    """
    if resolution < MIN_RESOLUTION:
        raise FpaError(f"resolution {resolution} px is too small for five poolings (use ≥ {MIN_RESOLUTION})")
    extractors = extractors or fd_extractors(seeds)
    running = {seed: RunningStats() for seed in extractors}
    for net in extractors.values():
        net.to(device)
    for batch in batches:
        batch = fit_resolution(batch.to(device=device, dtype=torch.float32), resolution)
        for seed, net in extractors.items():
            running[seed].update(fd_features(net, batch))
    stats = {seed: acc.result() for seed, acc in running.items()}
    widths = {net.base_width for net in extractors.values()}
    return StatsSet(stats=stats, extractor=extractor_family(widths.pop()),
                    extractor_ids={s: net.extractor_id for s, net in extractors.items()},
                    resolution=int(resolution), source=source)


@dataclass
class FDResult:
    """Fréchet distances of two statistics sets, one per common seed, with their mean and spread."""
    per_seed: dict[int, float]
    n_a: int
    n_b: int
    extractor: str
    extractor_ids: dict[int, str]
    resolution: int
    sources: tuple[str, str] = ("", "")  # what A and B were (`StatsSet.source`: a model's sampling)

    @property
    def seeds(self) -> list[int]:
        return sorted(self.per_seed)

    @property
    def fd(self) -> float:
        return float(np.mean(list(self.per_seed.values())))

    @property
    def fd_std(self) -> float:
        """Sample standard deviation over seeds (ddof = 1); 0 for a single seed."""
        values = list(self.per_seed.values())
        return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def compare(a: StatsSet, b: StatsSet) -> FDResult:
    """FD for every seed both sets share; refuses sets that are not comparable."""
    if a.extractor != b.extractor:
        raise FpaError(f"different extractors: {a.extractor} vs {b.extractor}")
    if a.resolution != b.resolution:
        raise FpaError(f"different resolutions: {a.resolution} vs {b.resolution}")
    seeds = sorted(set(a.stats) & set(b.stats))
    if not seeds:
        raise FpaError(f"no common extractor seeds: {a.seeds} vs {b.seeds}")
    for seed in seeds:
        if a.extractor_ids[seed] != b.extractor_ids[seed]:
            raise FpaError(f"seed {seed}: extractor weights differ "
                             f"({a.extractor_ids[seed]} vs {b.extractor_ids[seed]})")
    per_seed = {seed: frechet_distance(a.stats[seed], b.stats[seed]) for seed in seeds}
    return FDResult(per_seed=per_seed, n_a=a.n, n_b=b.n, extractor=a.extractor,
                    extractor_ids={seed: a.extractor_ids[seed] for seed in seeds},
                    resolution=a.resolution, sources=(a.source, b.source))

