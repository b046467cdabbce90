"""`sample_folder`: n images of a model into a folder — deterministic, resumable, sharded and fast.

Painting threads paint the batches after k (on a CPU one batch per core at once, `painting_plan`) while
a thread pool encodes and writes batch k (PNG/JPEG encoding and file I/O release the GIL, and so do
onnxruntime and torch), so on a multi-core CPU the files cost little beyond the painting. At most one
batch is being written at any time: Ctrl-C or kill -9 loses at most that batch, and a rerun completes
the folder (see `fpa_export.sampling.imagefiles` for why every file is whole or absent).

torch is not imported here: latents are drawn with numpy where that reproduces torch (`latents`), and
an onnxruntime sampler on the CPU paints numpy arrays, so sampling an exported graph never imports it.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from itertools import chain, islice
import os
from pathlib import Path
import sys
import threading
import time
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from fpa_export.common.devices import device_type
from fpa_export.common.errors import FpaError, not_a_file
from fpa_export.common.images import to_hwc, to_uint8
from fpa_export.common.lock import folder_lock
from fpa_export.runtime.modelfile import open_model
from fpa_export.runtime.precision import check_name
from . import manifest
from .imagefiles import (FORMATS, JPEG_QUALITIES, SampleFiles, check_room, encode_all, existing_files, file_name, image_shape,
                         is_valid, not_files, png_level, smallest_file, stale_temporaries, stray_images)
from .latents import check_seed, check_truncation, latent_array, shard_indices


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
    workers: int = 0            # encoding/writing threads; 0 = one per CPU core, at most 8
    threads: int = 0            # CPU painting threads (batches painted at once); 0 = one per core
    precision: Optional[str] = None  # fp32 | bf16 | fp16; None: fp32 (an exported graph: its own)
    verify: bool = False        # on resume, repaint a spread of existing files and compare (verify.py)

    def thread_counts(self) -> tuple[int, int]:
        """(painting threads, writing threads), each one per core by default, capped to the cores
        (painting) and to 8 per core (writing; at most 8 by default).

        On a CPU each painting thread paints a batch of its own with one runtime thread, which scales
        better than one batch on several runtime threads: 10,000 default-model images painted by
        onnxruntime on 2 cores took 1.06 s as two concurrent batches, 1.38 s as one batch on 2 threads,
        2.49 s on 1. End to end on 2 cores, interleaved fresh runs: the default model (10,000 PNGs)
        2.15–2.30 s with 2 painting threads against 2.95–3.14 s with 1, and the paper-size model
        (1,000 PNGs) 5.5–5.6 s against 5.9–6.4 s for one batch on 2 runtime threads. More writing
        threads only contend for the GIL with painting (2 cores: 2.0–2.5 s with 2, 2.4–3.1 s with 4)."""
        cores = os.cpu_count() or 1
        painting = min(self.threads, cores) if self.threads else cores
        writing = min(self.workers, 8 * cores) if self.workers else min(8, cores)
        return painting, writing

    def check(self) -> None:
        if self.n < 1:
            raise FpaError(f"--n must be at least 1, got {self.n}")
        if self.batch_size < 1:
            raise FpaError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.image_format not in FORMATS:
            raise FpaError(f"--format must be one of {FORMATS}, got {self.image_format!r}")
        if self.jpeg_quality not in JPEG_QUALITIES:
            raise FpaError(f"--jpeg-quality must be in 1..100, got {self.jpeg_quality}")
        check_truncation(self.truncation)
        check_seed(self.seed)
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
    choice: dict = field(default_factory=dict)   # what was chosen: backend, precision, threads, …

    @property
    def images_per_second(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


class NonFiniteImages(FpaError):
    """The model painted NaN or infinite pixels; nothing of that batch is written."""


def iter_samples(sampler, indices: Iterable[int], seed: int, batch_size: int,
                 truncation: float = 1.0, painters: int = 1) -> Iterator[tuple[Sequence[int], np.ndarray]]:
    """(indices, uint8 images (B, C, S, S)) batch by batch, in order; image i depends only on (model,
    seed, i). `indices` may be a lazy iterable (the plan of a huge --n is never held in memory).

    Up to `painters` batches are painted at once, each in a thread of its own (the runtimes release
    the GIL; on a CPU give each painter one runtime thread), and one more batch has its latents drawn
    meanwhile; `painters + 1` batches are held at most."""
    indices = iter(indices)
    painters = max(1, painters) if getattr(sampler, "parallel_batches", False) else 1
    permits = threading.Semaphore(painters)

    def paint(chunk: list[int]):
        z = latent_array(chunk, seed, sampler.latent_size, truncation)
        with permits:
            return chunk, _painted(sampler, chunk, z)

    pending: deque[Future] = deque()
    with ThreadPoolExecutor(painters + 1, thread_name_prefix="fpa-sample-paint") as pool:
        try:
            while chunk := list(islice(indices, batch_size)):
                pending.append(pool.submit(paint, chunk))
                if len(pending) > painters:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _painted(sampler, chunk: Sequence[int], z: np.ndarray) -> np.ndarray:
    """uint8 images of latents `z`, or NonFiniteImages."""
    images = sampler.images_array(z)  # (B, C, S, S) in [-1, 1]
    if not np.isfinite(images).all():
        raise NonFiniteImages(f"the model painted non-finite pixels (NaN/inf) for images "
                              f"{chunk[0]}..{chunk[-1]}; nothing was written for them (are the "
                              "weights finite?)")
    return to_uint8(images)


def sample_folder(run: SampleRun, model=None, backend: str = "auto", device: str = "cpu",
                  sampler=None, progress: bool = True,
                  on_start: Optional[Callable[[dict], None]] = None) -> SampleReport:
    """Sample `run.n` images of `model` (None = the embedded default) into `run.outdir`.

    `sampler` (an `fpa_export.runtime.Sampler` of the same model) skips opening one. Everything is
    checked (folder identity, model, precision probe, the first batch painted) before anything is
    written; the folder is locked while it is written. `on_start(choice)` is called once the run is
    known valid, with what was chosen (backend, precision, threads, PNG level).
    """
    run.check()
    outdir = Path(run.outdir)
    source = open_model(model)
    precision = sampler.precision if sampler is not None else run.precision
    precision = source.native_precision if precision is None else check_name(precision)
    wanted = manifest.build(source.identity(precision), source.config.to_dict(), seed=run.seed, n=run.n,
                            image_format=run.image_format, jpeg_quality=run.jpeg_quality,
                            truncation=run.truncation)
    # early, before the model is opened; repeated under the folder's lock below
    _check_not_files(outdir)  # first: a folder named 000002.png is said as such, not as a sample
    earlier = manifest.read(outdir, run.overwrite)
    manifest.merge(earlier, wanted, run.overwrite, existing_files(outdir))
    _check_strays(outdir, run, None if earlier is None or run.overwrite else earlier["n"])
    threads, workers = run.thread_counts()
    if sampler is None:
        sampler = open_sampler(source, backend, device, painting_plan(device, threads)[1], precision)
    painters, runtime_threads = painting_plan(device, threads, getattr(sampler, "parallel_batches", False))
    manifest.add_run(wanted, sampler)
    level = png_level(image_shape(source.config.image_size, source.config.channels))
    choice = {"backend": sampler.name, "precision": sampler.precision, "painting_threads": threads,
              "writing_threads": workers}
    if run.image_format == "png":
        choice["png_compress_level"] = level
    else:
        choice["jpeg_quality"] = run.jpeg_quality
    start = time.perf_counter()
    # exits in reverse: the pool finishes the batch in flight, then the folder is closed and unlocked
    with torch_threads(runtime_threads if device_type(device) == "cpu" else None), \
            folder_lock(outdir, "sample folder", shared=not run.overwrite), SampleFiles(outdir) as files, \
            ThreadPoolExecutor(workers, thread_name_prefix="fpa-sample-write") as pool:
        try:
            found = manifest.read(outdir)
            record, replaced = manifest.merge(found, wanted, False, existing_files(outdir)), False
        except manifest.FolderMismatch:
            if not run.overwrite:
                raise
            replaced = True  # the folder held another run: --overwrite replaces all of it
        if run.overwrite:
            record = wanted
        _remove_stale_temporaries(outdir, run)
        replaced_files = _replaced_files(outdir, run, every_shard=replaced)  # removed by _begin
        owned = shard_indices(run.n, run.shard)
        todo, count, broken, have = _plan(outdir, owned, run.image_format, source.config, pool,
                                          workers, keep=not run.overwrite)
        shape = image_shape(source.config.image_size, source.config.channels)
        check_room(outdir, count, smallest_file(shape, run.image_format), replaced_files)
        if run.verify:
            _verify(outdir, have, run, sampler, painters)
        # closing: on any error the painters are cancelled and joined before the folder is unlocked
        with closing(iter_samples(sampler, todo, run.seed, run.batch_size, run.truncation,
                                  painters)) as painted:
            batches = _first_batch_then(painted, lambda: _begin(outdir, record, choice, on_start,
                                                                run.overwrite, replaced_files))
            written = _write_all(pool, workers, files, batches, run, total=count,
                                 progress=progress)
    return SampleReport(outdir, written, len(owned) - count, broken, time.perf_counter() - start,
                        sampler.name, len(owned), record, choice)


def _check_not_files(outdir: Path) -> None:
    """Refuse a folder holding entries named as samples that are not files (nothing could replace them)."""
    blocked = not_files(outdir)
    if blocked:
        raise FpaError(f"{not_a_file(outdir / blocked[0])}, where a sample file belongs; move it away "
                       "or use another --outdir")


def _check_strays(outdir: Path, run: SampleRun, earlier_n: Optional[int]) -> None:
    """Refuse a folder holding images that are not this run's samples (FID tools would score them):
    names past the folder's earlier n (`earlier_n`, its samples.json's) were painted by no run of it."""
    limit = run.n if earlier_n is None else min(run.n, earlier_n)
    strays = stray_images(outdir, limit, run.image_format, run.overwrite)
    if strays:
        shown = ", ".join(strays[:3]) + (f" and {len(strays) - 3} more" if len(strays) > 3 else "")
        painted = f"samples 0..{limit - 1} of its runs" if limit < run.n else \
            f"samples 0..{run.n - 1} of this run"
        raise FpaError(f"{outdir}: holds image files that are not {painted} ({shown}); FID tools would "
                       "score them too: move them away or use another --outdir")


def painting_plan(device: str, threads: int, parallel: bool = True) -> tuple[int, int]:
    """(batches painted at once, runtime threads per batch) for `threads` painting threads: on a CPU
    each thread paints a batch of its own with one runtime thread (see `SampleRun.thread_counts`); a
    GPU, or a sampler that cannot paint batches in parallel (`parallel` False: CUDA graphs,
    torch.compile), paints one batch at a time on every thread."""
    return (threads, 1) if parallel and device_type(device) == "cpu" else (1, threads)


def open_sampler(model, backend: str, device: str, threads: int, precision: Optional[str] = None):
    """`make_sampler` for sampling images, with onnxruntime on the CPU limited to `threads` intra-op
    threads (its spinning worker threads would otherwise take the cores the encoders need)."""
    from fpa_export.runtime.factory import make_sampler

    return make_sampler(model, backend=backend, device=device, precision=precision, purpose="images",
                        threads=threads)


def _verify(outdir: Path, have: set[int], run: SampleRun, sampler, painters: int) -> None:
    """--verify: repaint a spread of the valid files present and compare them (sampling.verify)."""
    from .verify import verify_existing

    def paint(indices):
        return np.concatenate([images for _, images in iter_samples(
            sampler, indices, run.seed, run.batch_size, run.truncation, painters)])

    verify_existing(outdir, sorted(have), paint, run.image_format, run.jpeg_quality)


def _begin(outdir: Path, record: dict, choice: dict, on_start, overwrite: bool,
           replaced_files: Sequence[Path] = ()) -> None:
    """The run is known valid (its first batch is painted): remove the files --overwrite replaces
    (only now, so a run refused by its model, its export or a Ctrl-C before it paints leaves the old
    samples), write the manifest, announce the choice. A shard claims the folder's manifest
    (`manifest.claim`; FolderMismatch, nothing written): another shard's run of another model may have
    begun since (the shards share the folder's lock)."""
    for path in replaced_files:  # before the new manifest, so it never describes the old files
        path.unlink(missing_ok=True)
    if overwrite:  # --overwrite holds the folder alone
        manifest.write(outdir, record)
    else:
        manifest.claim(outdir, record)
    if on_start is not None:
        on_start(choice)


def _first_batch_then(batches: Iterator, action: Callable[[], None]) -> Iterator:
    """`batches`, calling `action()` once the first batch exists (and before it is yielded)."""
    for number, batch in enumerate(batches):
        if number == 0:
            action()
        yield batch


@contextmanager
def torch_threads(count: Optional[int]):
    """torch's intra-op threads set to `count` for the block (None, or torch not in use: unchanged),
    then restored."""
    if "torch" not in sys.modules:  # an onnxruntime run: nothing of torch's will run
        yield
        return
    torch = sys.modules["torch"]
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _remove_stale_temporaries(outdir: Path, run: SampleRun) -> None:
    """Temporary files of this shard's indices from an interrupted run."""
    first, count = run.shard
    for index, path in stale_temporaries(outdir):
        if index % count == first:
            path.unlink(missing_ok=True)


def _replaced_files(outdir: Path, run: SampleRun, every_shard: bool = False) -> list[Path]:
    """What --overwrite replaces: every sample file of this shard's indices (other shards replace
    their own), or with `every_shard` (the folder held another model, seed or precision: --overwrite
    holds it alone) every sample file, so a folder never mixes the old run's files with the new one's."""
    if not run.overwrite:
        return []
    first, count = run.shard
    return [outdir / name for index, names in existing_files(outdir).items()
            if every_shard or index % count == first for name in names]


def _plan(outdir: Path, owned: range, fmt: str, config, pool: ThreadPoolExecutor,
          workers: int, keep: bool = True) -> tuple[Iterator[int], int, int, set[int]]:
    """(indices to paint, lazily; how many; how many had a broken file; the valid indices present).
    Decodes every existing file of this shard (none with `keep` False: --overwrite paints them all);
    the plan is a generator over `owned`, so its size does not depend on --n."""
    present = existing_files(outdir) if keep else {}
    candidates = sorted(i for i, names in present.items() if i in owned and file_name(i, fmt) in names)
    chunks = [candidates[k::workers] for k in range(workers)]

    def check(chunk: list[int]) -> list[int]:
        return [i for i in chunk
                if not is_valid(outdir / file_name(i, fmt), config.image_size, config.channels)]

    broken = {i for bad in pool.map(check, chunks) for i in bad}
    have = set(candidates) - broken
    return (i for i in owned if i not in have), len(owned) - len(have), len(broken), have


def _write_chunk(files: SampleFiles, indices: Sequence[int], images: np.ndarray, fmt: str,
                 quality: int) -> int:
    for index, data in zip(indices, encode_all(images, fmt, quality)):
        files.write(file_name(index, fmt), data)
    return len(indices)


def _write_all(pool: ThreadPoolExecutor, workers: int, files: SampleFiles, batches, run: SampleRun,
               total: int, progress: bool) -> int:
    """Write each batch with the pool while the next one is painted; one batch in flight at most.
    Returns how many images were written."""
    from tqdm import tqdm

    in_flight: list[Future] = []
    written = 0

    def finished() -> int:
        nonlocal written
        done = sum(future.result() for future in in_flight)  # raises a write error
        written += done
        return done

    batches = iter(batches)
    first = next(batches, None)  # painted (and the run announced by `_begin`) before the bar is drawn
    with tqdm(total=total, unit="img", desc="sampling", disable=not progress or None,
              dynamic_ncols=True) as bar:
        try:
            for indices, images in chain([first] if first is not None else [], batches):
                bar.update(finished())
                images = to_hwc(images)
                step = -(-len(indices) // workers)
                in_flight = [pool.submit(_write_chunk, files, indices[k:k + step], images[k:k + step],
                                         run.image_format, run.jpeg_quality)
                             for k in range(0, len(indices), step)]
            bar.update(finished())
            return written
        except KeyboardInterrupt:
            raise  # the pool finishes the batch in flight (milliseconds) before the interrupt ends us
        except BaseException:
            for future in in_flight:
                future.cancel()
            raise
