"""The fp32 half of the precision probe, kept by content so that a low-precision run paints only its own.

The probe (`runtime.precision.probe`) compares the requested precision with fp32 on a fixed latent
draw. The fp32 images depend only on the weights, that draw and the runtime, so they are kept in the
export cache, next to the exported graphs:

    $FPA_EXPORT_CACHE/<sha256[:20]>-probe-<cpu|cuda>-v<version>/reference.npy  (+ reference.json)

The record is written after the array and states the array's sha256, the checkpoint's, the torch
version, the probe's seed and size and, on CUDA, the GPU's name and TF32 setting; an entry is used
only when all of them match, so a torn, stale or foreign entry is painted again (and rewritten). The
low-precision half is painted on every run, by the very sampler that then paints the images, and
judged against this reference as before.

Like the export cache, an entry is keyed by the package version, not by the code: a development
checkout that changes the model's arithmetic should clear the cache. It is an optimisation only
(about 0.08 s of every bf16 run of the paper-size model on a 2-core CPU, docs/SAMPLING.md): a cache
that cannot be read or written means the reference is painted each time.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from fpa_export.common.errors import FpaError

from .cache import cache_dir, cache_roots, usable_cache_dir, version_tag
from .precision import PROBE_IMAGES, PROBE_SEED

ARRAY_NAME = "reference.npy"
RECORD_NAME = "reference.json"


def entry_folder(sha256: str, device_kind: str, root: Optional[Path] = None) -> Path:
    return Path(root or cache_dir()) / f"{sha256[:20]}-probe-{device_kind}-{version_tag()}"


def cached_reference(sha256: str, device_kind: str, paint: Callable[[], np.ndarray]) -> np.ndarray:
    """The uint8 fp32 probe images of the weights with digest `sha256` on `device_kind`: from the cache
    when a valid entry holds them, else `paint()` (then kept for the next run)."""
    wanted = _inputs(sha256, device_kind)
    for root in cache_roots():  # the cache, or the temp folder that replaces an unwritable one
        found = _read(entry_folder(sha256, device_kind, root), wanted)
        if found is not None:
            return found
    images = np.ascontiguousarray(paint(), dtype=np.uint8)
    try:
        root = usable_cache_dir()
    except FpaError:
        return images  # nowhere to keep it: the reference was painted and is right, only not kept
    _write(entry_folder(sha256, device_kind, root), wanted, images)
    return images


def _inputs(sha256: str, device_kind: str) -> dict:
    import torch

    inputs = {"checkpoint_sha256": sha256, "device": device_kind, "torch": torch.__version__,
              "probe_seed": PROBE_SEED, "probe_images": PROBE_IMAGES}
    if device_kind == "cuda":  # GPUs differ in their kernels, and TF32 changes fp32 matmuls
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        inputs.update(gpu=gpu, tf32=bool(torch.backends.cuda.matmul.allow_tf32))
    return inputs


def _read(folder: Path, wanted: dict) -> Optional[np.ndarray]:
    import hashlib
    import io

    try:
        record = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
        if not isinstance(record, dict) or record.get("inputs") != wanted:
            return None
        data = (folder / ARRAY_NAME).read_bytes()  # read once: what is hashed is what is loaded
        if record.get("reference_sha256") != hashlib.sha256(data).hexdigest():
            return None
        images = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, RecursionError):
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != PROBE_IMAGES:
        return None
    return images


def _write(folder: Path, wanted: dict, images: np.ndarray) -> None:
    from fpa_export.common.atomic import atomic_write, atomic_write_json
    from fpa_export.export.sidecar import sha256_file

    try:
        folder.mkdir(parents=True, exist_ok=True)
        array = atomic_write(folder / ARRAY_NAME, lambda handle: np.save(handle, images, allow_pickle=False))
        atomic_write_json(folder / RECORD_NAME, {"inputs": wanted, "reference_sha256": sha256_file(array),
                                                 "shape": list(images.shape)})
    except OSError:
        pass  # a read-only or full cache: the reference was painted and is right, only not kept
