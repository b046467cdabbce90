"""Real-image statistics prepared once, and the Fréchet distance of samples against them (docs/MODEL.md §6).

The paper's protocol puts real images through the pipeline the fakes go through: resized to the model's
image size (shorter side, bilinear, then centre crop), converted to the model's channels, and saved in
the fakes' format (JPEG in the paper) before features are taken. `prepare_real_stats` does that in
memory, once, and writes the statistics (`fpa_export.fd` layout) with the pipeline recorded beside
them; `score_samples` refuses statistics prepared for another size, channel count or format.

Features come from `fpa_export.fd` (seeded random networks, offline): a relative metric, not comparable
with published Inception FID. For Inception FID, run pytorch-fid on the sample folder instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch

from fpa_export.common.errors import FpaError
from fpa_export.common.atomic import atomic_write
from fpa_export.common.images import IMAGE_SUFFIXES, UnreadableImage, list_images, load_image_array, to_hwc
from ..sampling.imagefiles import decode, encode
from .frechet import MIN_RESOLUTION, stored_int
from ..runtime.modelfile import open_model

PIPELINE = ("pipeline_size", "pipeline_channels", "pipeline_format", "pipeline_jpeg_quality")


def feature_resolution(image_size: int) -> int:
    return max(MIN_RESOLUTION, image_size)


def round_trip(images: np.ndarray, fmt: str, jpeg_quality: int) -> torch.Tensor:
    """uint8 (B, C, S, S) → float (B, C, S, S) in [0, 1] after encoding and decoding as `fmt`
    (PNG is lossless, so it is skipped)."""
    if fmt == "jpg":
        decoded = [decode(encode(image, fmt, jpeg_quality)) for image in to_hwc(images)]
        images = np.stack([d[None] if d.ndim == 2 else d.transpose(2, 0, 1) for d in decoded])
    return torch.from_numpy(np.ascontiguousarray(images)).float() / 255.0


def _real_batches(paths: Sequence[Path], size: int, channels: int, fmt: str, jpeg_quality: int,
                  batch_size: int, skipped: list) -> Iterator[torch.Tensor]:
    from tqdm import tqdm

    with tqdm(total=len(paths), unit="img", desc="real images", disable=None) as bar:
        for start in range(0, len(paths), batch_size):
            arrays = []
            for path in paths[start:start + batch_size]:
                try:
                    array = load_image_array(path, size, channels)  # oversized files are skipped too
                    arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
                except UnreadableImage:
                    skipped.append(path)
            bar.update(min(batch_size, len(paths) - start))
            if arrays:
                yield round_trip(np.stack(arrays), fmt, jpeg_quality)


def prepare_real_stats(image_dir: str | Path, out: str | Path, model=None, image_format: str = "png",
                       jpeg_quality: int = 95, seeds: Sequence[int] = (0, 1, 2),
                       batch_size: int = 100, device: str = "cpu"):
    """Statistics of every image under `image_dir` for comparisons with `model`'s samples; saved to
    `out`. Returns (StatsSet, number of unreadable files skipped)."""
    from . import metric as fd

    config = open_model(model).config
    paths = list_images(image_dir)
    if not paths:
        raise FpaError(f"{image_dir}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    skipped: list[Path] = []
    batches = _real_batches(paths, config.image_size, config.channels, image_format, jpeg_quality,
                            batch_size, skipped)
    source = (f"{image_dir}: {len(paths)} files → {config.image_size} px, {config.channels} channel(s), "
              f"{image_format} round trip")
    stats = fd.compute_stats(batches, seeds=seeds, resolution=feature_resolution(config.image_size),
                             source=source, device=device)
    arrays = {**stats.to_arrays(), **_pipeline_arrays(config, image_format, jpeg_quality)}
    atomic_write(out, lambda handle: np.savez(handle, **arrays))
    return stats, len(skipped)


def _pipeline_arrays(config, fmt: str, jpeg_quality: int) -> dict:
    return {"pipeline_size": np.asarray(config.image_size), "pipeline_channels": np.asarray(config.channels),
            "pipeline_format": np.asarray(fmt),
            "pipeline_jpeg_quality": np.asarray(jpeg_quality if fmt == "jpg" else 0)}


def load_reference(path: str | Path, config, fmt: str, jpeg_quality: int):
    """The StatsSet in `path`, after checking it was prepared for this model's images and format."""
    from . import metric as fd

    stats = fd.load_stats(path)
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in PIPELINE if key in data.files}
    if len(arrays) != len(PIPELINE):
        raise FpaError(f"{path}: no pipeline record; prepare it with `fpa-sample stats IMAGE_DIR -o "
                         f"{Path(path).name}` so real and fake images are processed alike")
    recorded = {key: stored_int(arrays, key, str(path)) for key in PIPELINE if key != "pipeline_format"}
    if arrays["pipeline_format"].ndim != 0 or arrays["pipeline_format"].dtype.kind != "U":
        raise FpaError(f"{path}: its pipeline_format is {arrays['pipeline_format'].tolist()!r}, not a "
                       "format name (damaged or edited); prepare it again")
    recorded["pipeline_format"] = str(arrays["pipeline_format"])
    wanted = {k: v.item() for k, v in _pipeline_arrays(config, fmt, jpeg_quality).items()}
    if recorded != wanted:
        def describe(p):
            quality = f" q{p['pipeline_jpeg_quality']}" if p["pipeline_format"] == "jpg" \
                or p["pipeline_jpeg_quality"] else ""
            return (f"{p['pipeline_size']} px, {p['pipeline_channels']} channel(s), "
                    f"{p['pipeline_format']}{quality}")
        raise FpaError(f"{path} was prepared for {describe(recorded)} images, these samples are "
                         f"{describe(wanted)}; prepare matching statistics with `fpa-sample stats`")
    return stats


def score_samples(batches: Iterable[np.ndarray], reference: str | Path, config, fmt: str = "png",
                  jpeg_quality: int = 95, device: str = "cpu", decoded: bool = False):
    """FDResult of uint8 sample batches (B, C, S, S) against prepared statistics. `decoded=True` when
    the batches were read back from files (no further round trip)."""
    from . import metric as fd

    ref = load_reference(reference, config, fmt, jpeg_quality)
    floats = (torch.from_numpy(b).float() / 255.0 if decoded else round_trip(b, fmt, jpeg_quality)
              for b in batches)
    stats = fd.compute_stats(floats, seeds=ref.seeds, resolution=ref.resolution, source="samples",
                             device=device)
    return fd.compare(ref, stats)


def read_files(paths: Sequence[Path], batch_size: int = 100) -> Iterator[np.ndarray]:
    """uint8 (B, C, S, S) batches decoded from sample files."""
    for start in range(0, len(paths), batch_size):
        arrays = [decode(path) for path in paths[start:start + batch_size]]
        yield np.stack([a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in arrays])
