"""`sample_folder`: n images of a model into a folder — deterministic, resumable, sharded and fast.

The main thread paints batch k+1 while a thread pool encodes and writes batch k (PNG/JPEG encoding and
file I/O release the GIL, and so do onnxruntime and torch), so on a multi-core CPU the files cost
little beyond the painting. At most one batch is being written at any time: Ctrl-C or kill -9 loses at
most that batch, and a rerun completes the folder (see `fpa_export.sampling.imagefiles` for why every
file is whole or absent).
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
import os
from pathlib import Path
import time
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from fpa_export.common.errors import FpaError
from fpa_export.common.images import to_uint8
from . import manifest
from .imagefiles import (FORMATS, encode, existing_files, file_name, is_valid, stale_temporaries,
                         to_hwc, write_bytes_atomic)
from .latents import check_truncation, latents_for, shard_indices
from .model_id import model_config, model_identity


@dataclass
class SampleRun:
    """What to sample and where (the options of `fpa-sample`)."""
    outdir: Path
    n: int
    seed: int = 0
    batch_size: int = 64
    image_format: str = "png"
    jpeg_quality: int = 95
    truncation: float = 1.0
    shard: tuple[int, int] = (0, 1)
    overwrite: bool = False
    workers: int = 0            # encoding/writing threads; 0 = 4 per CPU core, at most 8
    threads: int = 0            # CPU painting threads (torch, onnxruntime); 0 = half the cores

    def thread_counts(self) -> tuple[int, int]:
        """(painting threads, writing threads). Writing is mostly waiting on the file system, so it
        gets several threads; painting gets half the cores, leaving the rest to encoding."""
        cores = os.cpu_count() or 1
        return self.threads or max(1, cores // 2), self.workers or min(8, 4 * cores)

    def check(self) -> None:
        if self.n < 1:
            raise FpaError(f"--n must be at least 1, got {self.n}")
        if self.batch_size < 1:
            raise FpaError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.image_format not in FORMATS:
            raise FpaError(f"--format must be one of {FORMATS}, got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise FpaError(f"--jpeg-quality must be in 1..100, got {self.jpeg_quality}")
        check_truncation(self.truncation)
        if Path(self.outdir).exists() and not Path(self.outdir).is_dir():
            raise FpaError(f"{self.outdir}: exists and is not a folder")


@dataclass
class SampleReport:
    outdir: Path
    written: int                # images painted and written by this run
    skipped: int                # valid images already present
    regenerated: int            # present but broken (e.g. truncated), written again
    seconds: float
    backend: str
    indices: int                # images this shard owns
    manifest: dict = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def iter_samples(sampler, indices: Sequence[int], seed: int, batch_size: int,
                 truncation: float = 1.0) -> Iterator[tuple[Sequence[int], np.ndarray]]:
    """(indices, uint8 images (B, C, S, S)) batch by batch; image i depends only on (model, seed, i)."""
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        z = latents_for(chunk, seed, sampler.latent_size, truncation)
        with torch.inference_mode():
            images = sampler(z)  # (B, C, S, S) in [-1, 1]
        yield chunk, to_uint8(images).numpy()


def sample_folder(run: SampleRun, model=None, backend: str = "auto", device: str = "cpu",
                  sampler=None, progress: bool = True) -> SampleReport:
    """Sample `run.n` images of `model` (None = the embedded default) into `run.outdir`.

    `sampler` (an `fpa_export.runtime.Sampler` of the same model) skips opening one.
    """
    run.check()
    outdir = Path(run.outdir)
    identity, config = model_identity(model), model_config(model)
    wanted = manifest.build(identity, config.to_dict(), seed=run.seed, n=run.n,
                            image_format=run.image_format, jpeg_quality=run.jpeg_quality,
                            truncation=run.truncation)
    has_files = bool(existing_files(outdir))  # before the manifest: shards write it before any file
    record = manifest.merge(manifest.read(outdir), wanted, run.overwrite, has_files)  # before any work
    threads, workers = run.thread_counts()
    if sampler is None:
        sampler = open_sampler(model, backend, device, threads)
    record["backends"] = sorted(set(record["backends"]) | {sampler.name})
    outdir.mkdir(parents=True, exist_ok=True)
    owned = shard_indices(run.n, run.shard)
    _remove_leftovers(outdir, run)
    manifest.write(outdir, record)

    start = time.perf_counter()
    with torch_threads(threads if torch.device(device).type == "cpu" else None), \
            ThreadPoolExecutor(workers, thread_name_prefix="fpa-sample-write") as pool:
        todo, broken = _missing(outdir, owned, run.image_format, config, pool, workers)
        _write_all(pool, workers, outdir, iter_samples(sampler, todo, run.seed, run.batch_size,
                                                        run.truncation),
                   run, total=len(todo), progress=progress)
    return SampleReport(outdir, len(todo), len(owned) - len(todo), broken,
                        time.perf_counter() - start, sampler.name, len(owned), record)


def open_sampler(model, backend: str, device: str, threads: int):
    """`make_sampler`, with onnxruntime on the CPU limited to `threads` intra-op threads (its
    spinning worker threads would otherwise take the cores the encoders need)."""
    from fpa_export.runtime import available_backends, make_sampler
    from .model_id import model_kind

    kind, cpu = model_kind(model), torch.device(device).type == "cpu"
    onnx = backend == "onnx" or backend == "auto" and (
        kind == "onnx" or kind == "checkpoint" and cpu and "onnx" in available_backends("cpu"))
    options = {"threads": threads} if onnx and cpu else {}
    return make_sampler(model, backend=backend, device=device, **options)


@contextmanager
def torch_threads(count: Optional[int]):
    """torch's intra-op threads set to `count` for the block (None: unchanged), then restored."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _remove_leftovers(outdir: Path, run: SampleRun) -> None:
    """Temporary files of this shard's indices from an interrupted run; with --overwrite, every sample
    file of this shard's indices (other shards clean their own)."""
    first, count = run.shard
    for index, path in stale_temporaries(outdir):
        if index % count == first:
            path.unlink(missing_ok=True)
    if run.overwrite:
        for index, names in existing_files(outdir).items():
            if index % count == first:
                for name in names:
                    (outdir / name).unlink(missing_ok=True)


def _missing(outdir: Path, owned: range, fmt: str, config, pool: ThreadPoolExecutor,
             workers: int) -> tuple[list[int], int]:
    """(indices to paint, how many of them had a broken file): decodes every existing file."""
    present = existing_files(outdir)
    candidates = [i for i in owned if file_name(i, fmt) in present.get(i, ())]
    chunks = [candidates[k::workers] for k in range(workers)]

    def check(chunk: list[int]) -> list[int]:
        return [i for i in chunk
                if not is_valid(outdir / file_name(i, fmt), config.image_size, config.channels)]

    broken = {i for bad in pool.map(check, chunks) for i in bad}
    have = set(candidates) - broken
    return [i for i in owned if i not in have], len(broken)


def _write_chunk(outdir: Path, indices: Sequence[int], images: np.ndarray, fmt: str,
                 quality: int) -> int:
    for index, image in zip(indices, images):
        write_bytes_atomic(outdir / file_name(index, fmt), encode(image, fmt, quality))
    return len(indices)


def _write_all(pool: ThreadPoolExecutor, workers: int, outdir: Path, batches, run: SampleRun,
               total: int, progress: bool) -> None:
    """Write each batch with the pool while the next one is painted; one batch in flight at most."""
    from tqdm import tqdm

    in_flight: list[Future] = []
    with tqdm(total=total, unit="img", desc="sampling", disable=not progress or None,
              dynamic_ncols=True) as bar:
        try:
            for indices, images in batches:
                bar.update(sum(future.result() for future in in_flight))  # raises a write error
                images = to_hwc(images)
                step = -(-len(indices) // workers)
                in_flight = [pool.submit(_write_chunk, outdir, indices[k:k + step], images[k:k + step],
                                         run.image_format, run.jpeg_quality)
                             for k in range(0, len(indices), step)]
            bar.update(sum(future.result() for future in in_flight))
        except KeyboardInterrupt:
            raise  # the pool finishes the batch in flight (milliseconds) before the interrupt ends us
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
