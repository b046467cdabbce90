"""The offline Fréchet distance between image folders, models and saved statistics (`fpa-fd`).

Sources: an image folder (every image, shorter side resized to the resolution then centre-cropped, as
in the paper's FID protocol), a model checkpoint or `default` (N samples, z ~ N(0, I) from a seeded
torch generator, clamped to [0, 1] and quantised to uint8 exactly as saved PNGs are), or an `.npz`
written by `save_stats`. The features and the distance are in `fpa_export.fd.frechet`; this module reads and
writes files and picks comparable settings. Python API for other commands:

    stats = compute_stats(batches, seeds=(0, 1, 2), resolution=64)   # batches: (B, C, H, W) in [0, 1]
    save_stats("ref.npz", stats); ref = load_stats("ref.npz")
    result = compare(ref, stats)                                     # result.fd, result.fd_std
"""
from __future__ import annotations

import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from fpa_export.common.errors import FpaError
from fpa_export.common.atomic import atomic_write, check_outputs, check_replaceable, check_suffix, check_writable
from fpa_export.export.options import ENGINE_SUFFIXES
from fpa_export.models import DEFAULT_MODEL
from fpa_export.fd.frechet import (MIN_RESOLUTION, FDResult, StatsSet, check_feature_memory,  # noqa: F401
                                   compare, compute_stats, frechet_distance)
from fpa_export.common.images import IMAGE_SUFFIXES, iter_image_batches, list_images, resize_center_crop, to_hwc_array, to_uint8

__all__ = ["compute_stats", "save_stats", "load_stats", "compare", "frechet_distance", "fd_between",
           "stats_only", "stats_of", "classify", "parse_seeds", "StatsSet", "FDResult"]

DEFAULT_RESOLUTION = 64
EXPORTED_SUFFIXES = (".onnx", *ENGINE_SUFFIXES)
NOT_COMPARABLE = "a relative metric: NOT comparable with published (Inception) FID"


def parse_seeds(text: str) -> list[int]:
    """Extractor seeds in the one seed syntax of every command (`fpa_export.sampling.latents`):
    '3' → [3], '0-2' → [0, 1, 2], '1,5,9' → those seeds; they must be distinct."""
    from fpa_export.sampling.latents import parse_seed_range

    try:
        seeds = parse_seed_range(text)
    except FpaError as err:
        raise FpaError(f"--seeds: {err}") from None
    if len(set(seeds)) != len(seeds):
        raise FpaError(f"--seeds lists a seed twice: {text!r}")
    return seeds


@dataclass
class Source:
    """One side of a comparison: kind is 'folder', 'stats' or 'model'."""
    kind: str
    path: Optional[Path]   # None for the embedded default model
    text: str
    sampler: Optional[object] = None   # for models: an fpa_export.runtime Sampler, once opened


def classify(text: str) -> Source:
    """A command-line argument → Source: a directory, an `.npz`, or a model (`default`, a checkpoint,
    or an exported .onnx / TensorRT engine, all sampled through `fpa_export.runtime`)."""
    if text == DEFAULT_MODEL:
        return Source("model", None, text)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(f"{text}: no such file or folder (use 'default' for the embedded model)")
    if path.is_dir():
        return Source("folder", path, text)
    return Source("stats" if path.suffix.lower() == ".npz" else "model", path, text)


def check_stats_output(path: str | Path, inputs: dict | None = None) -> None:
    """Before the (slow) features: `path` is an `.npz` that can be written and overwrites none of
    `inputs` (description → path), else one line (a checkpoint or an image given as `-o` is refused)."""
    check_writable(path, "statistics file")
    check_suffix(path, (".npz",), "statistics file")
    check_outputs({"the statistics": path}, inputs)
    check_replaceable(path, "statistics written by fpa-fd or fpa-sample stats", _ours,
                      "delete it first")


def _ours(path: str | Path) -> bool:
    """Whether `path` holds statistics that `save_stats` (or `fpa-sample stats`) wrote."""
    try:
        load_stats(path)
    except FpaError:
        return False
    return True


def save_stats(path: str | Path, stats: StatsSet) -> Path:
    """Write statistics atomically as an uncompressed `.npz` (feature means and covariances under
    keys of their own, seeds, `kind` + metadata; no `mu`/`sigma`, so Inception-FID tools refuse it)."""
    arrays = stats.to_arrays()
    return atomic_write(path, lambda handle: np.savez(handle, **arrays))


def load_stats(path: str | Path) -> StatsSet:
    """Read statistics written by `save_stats`; one-line ValueError for any other file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return StatsSet.from_arrays({key: data[key] for key in data.files}, where=str(path))
    except FpaError:
        raise
    except (zipfile.BadZipFile, EOFError) as err:  # an .npz cut short or damaged
        raise FpaError(f"{path}: a damaged statistics file ({err}); prepare it again") from None
    except ValueError:  # not an .npz at all: numpy takes any other bytes for a pickle
        raise FpaError(f"{path}: not a statistics file (.npz from `fpa-fd --save-stats` or "
                       "`fpa-sample stats`)") from None
    except (OSError, KeyError) as err:
        raise FpaError(f"{path}: not a readable statistics file ({err})") from None


def _progress(total: int, label: str):
    from tqdm import tqdm
    return tqdm(total=total, desc=label, unit="img", disable=None, leave=False)


def folder_batches(folder: Path, resolution: int, batch_size: int = 100) -> Iterator[torch.Tensor]:
    """Batches (B, 3, R, R) in [0, 1] of every image under `folder`. Unreadable (or oversized) files
    are skipped and counted in one note on stderr at the end, as `fpa-sample stats` reports them; a
    folder with fewer than 2 readable images is a one-line error naming it."""
    paths = list_images(folder)
    if not paths:
        raise FpaError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    read = skipped = 0
    with _progress(len(paths), Path(folder).name or str(folder)) as bar:
        for batch, unreadable in iter_image_batches(paths, resolution, 3, batch_size):
            bar.update(batch.shape[0] + unreadable)
            read, skipped = read + batch.shape[0], skipped + unreadable
            if batch.shape[0]:
                yield batch
    if read < 2:
        raise FpaError(f"{folder}: {read} readable image(s) of {len(paths)} image file(s); feature "
                       "statistics need at least 2")
    if skipped:
        print(f"note: {folder}: {skipped} unreadable file(s) of {len(paths)} skipped", file=sys.stderr)


def folder_image_size(folder: Path) -> Optional[int]:
    """The shorter side of the first readable image under `folder` (the order of `list_images`; only
    its header is read), or None when it holds none."""
    from PIL import Image

    for path in list_images(folder):
        try:
            with Image.open(path) as image:
                return min(image.size)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return None


def open_sampler(source: Source, backend: Optional[str] = None, device: str = "cpu",
                 precision: Optional[str] = None):
    """The source's `fpa_export.runtime` Sampler, created once through the one factory. Backend None:
    torch for checkpoints (reproducible, nothing cached), the file's own runtime for exported graphs
    and engines; a steps-only graph is refused before any work."""
    if source.sampler is None:
        from ..runtime.factory import make_sampler

        if backend is None:
            exported = source.path is not None and source.path.suffix.lower() in EXPORTED_SUFFIXES
            backend = "auto" if exported else "torch"
        source.sampler = make_sampler(source.path, backend=backend, device=device, precision=precision,
                                      purpose="images")
    return source.sampler


@torch.no_grad()
def model_batches(sampler, n: int, sample_seed: int = 0, batch_size: int = 100,
                  resolution: Optional[int] = None) -> Iterator[torch.Tensor]:
    """`n` samples of a Sampler as (B, C, R, R) in [0, 1]: images 0..n-1 of the run with seed
    `sample_seed` under the one seed rule (`fpa_export.sampling.latents`), i.e. exactly the images
    `fpa-sample --seed S --n N` writes. Outputs are clamped to [0, 1] and quantised to uint8 like saved
    PNGs, then resized like image files, so a model and a folder of its saved samples score the same."""
    from fpa_export.sampling.latents import latents_for

    with _progress(n, "samples") as bar:
        for start in range(0, n, batch_size):
            count = min(batch_size, n - start)
            z = latents_for(range(start, start + count), int(sample_seed), sampler.latent_size)
            images = to_uint8(sampler(z)).cpu()   # (B, C, S, S) uint8
            if resolution is not None and images.shape[-1] != resolution:
                images = _resize_like_files(images, resolution)
            yield images.float() / 255.0
            bar.update(count)


def _resize_like_files(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (B, C, S, S) → (B, C, R, R) through the very Pillow resize that image folders get."""
    from PIL import Image

    out = []
    for image in images:
        pil = resize_center_crop(Image.fromarray(to_hwc_array(image)), resolution)
        array = np.asarray(pil, dtype=np.uint8)
        out.append(torch.from_numpy(array.copy()).reshape(resolution, resolution, -1).permute(2, 0, 1))
    return torch.stack(out)


def stats_of(source: Source, seeds: Sequence[int], resolution: int, n: int = 2000,
             sample_seed: int = 0, batch_size: int = 100, device: str = "cpu",
             backend: Optional[str] = None) -> StatsSet:
    """Statistics of one source under the given extractor seeds and resolution."""
    if source.kind == "stats":
        return _checked_stats(load_stats(source.path), seeds, resolution, source.text)
    check_feature_memory(resolution, min(batch_size, n) if source.kind != "folder" else batch_size)
    if source.kind == "folder":
        batches = folder_batches(source.path, resolution, batch_size)
        label = f"folder {source.text}"
    else:
        sampler = open_sampler(source, backend, device)
        batches = model_batches(sampler, n, sample_seed, batch_size, resolution)
        label = (f"model {source.text}, {n} samples, sample seed {sample_seed}, {sampler.precision}, "
                 f"{sampler.name}")
    return compute_stats(batches, seeds=seeds, resolution=resolution, source=label, device=device)


def _checked_stats(stats: StatsSet, seeds: Sequence[int], resolution: int, where: str) -> StatsSet:
    missing = sorted(set(seeds) - set(stats.seeds))
    if missing:
        raise FpaError(f"{where} has no statistics for seed(s) {missing} (it has {stats.seeds})")
    if stats.resolution != resolution:
        raise FpaError(f"{where} was computed at {stats.resolution} px, not {resolution} px")
    stats.stats = {seed: stats.stats[seed] for seed in seeds}
    return stats


def choose_settings(sources: Sequence[Source], seeds: Optional[Sequence[int]],
                    resolution: Optional[int]) -> tuple[list[int], int]:
    """Seeds and resolution for a comparison: explicit values win, then saved statistics (which fix
    both), then the largest model's image size (at least 32), then, with folders only, the smallest
    folder's image size (its first image's shorter side) up to 64 and at least 32; seeds 0, 1, 2.
    So a folder of a model's samples is compared at the size the model itself would be, against
    real images or against the model. Model sources must have been opened (`open_sampler`)."""
    saved = [load_stats(s.path) for s in sources if s.kind == "stats"]
    if seeds is None:
        seeds = sorted(set.intersection(*(set(s.seeds) for s in saved))) if saved else [0, 1, 2]
        if not seeds:
            raise FpaError("the statistics files share no extractor seed")
    if resolution is None:
        if saved:
            resolution = saved[0].resolution
        elif any(s.kind == "model" for s in sources):
            sizes = [s.sampler.config.image_size for s in sources if s.kind == "model"]
            resolution = max([MIN_RESOLUTION] + sizes)
        else:
            sizes = [size for size in (folder_image_size(s.path) for s in sources) if size is not None]
            resolution = max(MIN_RESOLUTION, min([DEFAULT_RESOLUTION] + sizes))
    return list(seeds), int(resolution)


def fd_between(a: str, b: str, seeds: Optional[Sequence[int]] = None,
               resolution: Optional[int] = None, n: int = 2000, sample_seed: int = 0,
               batch_size: int = 100, device: str = "cpu", backend: Optional[str] = None,
               save_a: Optional[str | Path] = None, precision: Optional[str] = None) -> FDResult:
    """The Fréchet distance between two sources (see the module docstring), per seed. `precision`:
    that of model sources (None: fp32, an exported graph's own). `save_a`: A's statistics are saved
    there once the comparison has succeeded, so a failing B never writes or replaces the file."""
    sources = [classify(a), classify(b)]
    for source in sources:
        if source.kind == "model":
            open_sampler(source, backend, device, precision)
    seeds, resolution = choose_settings(sources, seeds, resolution)
    options = dict(n=n, sample_seed=sample_seed, batch_size=batch_size, device=device, backend=backend)
    stats_a = stats_of(sources[0], seeds, resolution, **options)
    result = compare(stats_a, stats_of(sources[1], seeds, resolution, **options))
    if save_a is not None:
        save_stats(save_a, stats_a)
    return result


def stats_only(a: str, out: str | Path, seeds: Optional[Sequence[int]] = None,
               resolution: Optional[int] = None, n: int = 2000, sample_seed: int = 0,
               batch_size: int = 100, device: str = "cpu", backend: Optional[str] = None,
               precision: Optional[str] = None) -> StatsSet:
    """Compute the statistics of one source and save them to `out`."""
    source = classify(a)
    if source.kind == "stats":
        raise FpaError(f"{a} already holds statistics")
    if source.kind == "model":
        open_sampler(source, backend, device, precision)
    seeds, resolution = choose_settings([source], seeds, resolution)
    stats = stats_of(source, seeds, resolution, n=n, sample_seed=sample_seed,
                     batch_size=batch_size, device=device, backend=backend)
    save_stats(out, stats)
    return stats


def result_json(result: FDResult, **extra) -> str:
    """One JSON object: fd (mean over seeds), fd_std, per-seed values, N, extractor, seeds, resolution,
    what each set was (`source_a`, `source_b`: a model's sample count, sample seed, precision and
    backend), and `extra` (the CLI adds the sources `a` and `b` as given, so a saved line says what it
    compared)."""
    record = {
        "fd": result.fd, "fd_std": result.fd_std,
        "fd_per_seed": {str(seed): value for seed, value in sorted(result.per_seed.items())},
        "n_a": result.n_a, "n_b": result.n_b, "extractor": result.extractor, "seeds": result.seeds,
        "extractor_ids": [result.extractor_ids[seed] for seed in result.seeds],
        "resolution": result.resolution, "source_a": result.sources[0], "source_b": result.sources[1],
        "comparable_with_published_fid": False, **extra,
    }
    return json.dumps(record)


def result_text(result: FDResult) -> str:
    """The human summary: the number with everything needed to reproduce and compare it."""
    seeds = ",".join(str(s) for s in result.seeds)
    return (f"FD = {result.fd:.4g} ± {result.fd_std:.2g} (mean ± std over extractor seeds {seeds})\n"
            f"extractor {result.extractor}, resolution {result.resolution} px, "
            f"N_a = {result.n_a}, N_b = {result.n_b}; {NOT_COMPARABLE}")
