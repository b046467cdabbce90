"""`samples.json`: what a sample folder was made from, so reruns resume it and never mix two runs.

    {"format": "fpa-samples", "format_version": 1,
     "model": {"sha256", "kind", "path", "precision"}, "model_paths": [...], "config": {...},
     "seed": 0, "n": 1000, "image_format": "png", "jpeg_quality": null, "truncation": 1.0,
     "files": "{i:06d}.png", "latents": LATENT_RULE, "uint8": ..., "backends": [...],
     "versions": {package: version, or [versions] where runs differed},
     "precision": {"name": "bf16", "probe": {"images", "within_2_levels", "mean_levels", "max_levels",
                                             "tolerance"}}}

The identity — model weights (checkpoint sha256) and precision (fp32 | bf16 | fp16), seed, truncation,
image format and JPEG quality — must match on a rerun (else the folder is refused, naming what differs,
unless --overwrite); the file or runtime that held the weights may change. A larger --n extends a
folder (image i does not depend on n); a smaller one is refused while files an earlier run painted
(below its n) lie at or beyond it, because FID tools read every file in the folder (an interrupted
run's n is only a plan: a smaller --n that covers every file there continues it); a sample-like name
past the earlier n is a stray, named by the run's stray-file check. Backends may differ between runs
(they agree within one uint8 level) and are all listed.
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Optional

from fpa_export.common.errors import FpaError, not_a_file
from fpa_export.common.atomic import atomic_write_json
from fpa_export.common.lock import brief_lock
from fpa_export.models import PACKAGE_VERSION
from .imagefiles import JPEG_QUALITIES, existing_files
from .latents import LATENT_RULE, check_seed, check_truncation

MANIFEST = "samples.json"
FORMAT = "fpa-samples"
FORMAT_VERSION = 1
IDENTITY = ("model", "seed", "truncation", "image_format", "jpeg_quality")
UINT8_RULE = "floor(255 * clamp(x, 0, 1) + 0.5) of the [-1, 1] output (fpa_export.common.images.to_uint8)"


class FolderMismatch(FpaError):
    """The folder holds samples of another run; the message is one line."""


def is_sample_folder(folder: Path) -> bool:
    """Whether `folder` holds a sample run's samples.json (what FID tools read as a set of samples)."""
    try:
        return json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def enclosing_sample_folder(path: str | os.PathLike) -> Optional[Path]:
    """The sample folder that `path` would lie inside, at any depth (clean-fid and fpa-fd read
    subfolders too, so anything image-like written there is scored as a sample), or None."""
    for folder in Path(os.path.abspath(path)).parents:
        if is_sample_folder(folder):
            return folder
    return None


def build(model: dict, config: dict, *, seed: int, n: int, image_format: str,
          jpeg_quality: Optional[int], truncation: float, backend: Optional[str] = None) -> dict:
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "model": model, "model_paths": [model["path"]] if model.get("path") else [], "config": config,
        "seed": int(seed), "n": int(n), "image_format": image_format,
        "jpeg_quality": jpeg_quality if image_format == "jpg" else None,
        "truncation": float(truncation),
        "files": "{i:06d}." + image_format, "latents": LATENT_RULE, "uint8": UINT8_RULE,
        "backends": [backend] if backend else [],
        "versions": {"fpa-export": PACKAGE_VERSION, "torch": _torch_version()},
    }


def _torch_version() -> Optional[str]:
    """torch's version, read from its installed metadata (sampling an exported graph imports no torch)."""
    import sys

    if "torch" in sys.modules:
        return sys.modules["torch"].__version__
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return None


def add_run(record: dict, sampler) -> dict:
    """Add what this run's sampler contributes: its backend, its precision record (with the probe's
    figures for bf16/fp16) and the runtime library versions it used."""
    record["backends"] = sorted(set(record["backends"]) | {sampler.name})
    if getattr(sampler, "precision_record", None):
        record["precision"] = sampler.precision_record
    if sampler.name.startswith("onnxruntime"):
        from importlib.metadata import PackageNotFoundError, version

        for package in ("onnxruntime", "onnxruntime-gpu"):
            try:
                record["versions"][package] = version(package)
            except PackageNotFoundError:
                pass
    return record


def read(folder: Path, overwrite: bool = False) -> Optional[dict]:
    """The folder's manifest, None when there is none; FolderMismatch when it is unreadable, not a
    manifest or has a field of the wrong type (`field_problem`), except with `overwrite` (the run
    replaces it: None)."""
    path = Path(folder) / MANIFEST
    if not os.path.lexists(path):
        return None
    if not path.is_file():  # not even --overwrite could replace it
        raise FolderMismatch(f"{not_a_file(path)}; move it away or use another --outdir")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        if overwrite:
            return None
        raise FolderMismatch(f"{path}: unreadable; remove it or pass --overwrite") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        if overwrite:
            return None
        raise FolderMismatch(f"{path}: not an fpa-sample manifest; use another --outdir or --overwrite")
    problem = field_problem(data)
    if problem:
        if overwrite:
            return None
        raise FolderMismatch(f"{path}: {problem}, so the folder's samples are unknown; restore the "
                             "file, use another --outdir or pass --overwrite")
    return data


def field_problem(data: dict) -> str:
    """'' when the fields a rerun relies on have the types `build` writes, else the first that does not,
    named (a hand-edited or foreign samples.json is refused in one line, never half-merged)."""
    version = data.get("format_version")
    if not _is_int(version) or not 1 <= version <= FORMAT_VERSION:
        return (f"format_version {version!r} is not one this version reads (1 to {FORMAT_VERSION}; "
                "a newer fpa-export wrote it?)")
    if not _is_int(data.get("n")) or data["n"] < 0:
        return f"n is {data.get('n')!r}, not a count of images"
    for key, check, what in (("seed", check_seed, "a seed"), ("truncation", check_truncation, "a psi in (0, 1]")):
        try:
            check(data.get(key))
        except FpaError:
            return f"{key} is {data.get(key)!r}, not {what}"
    if not isinstance(data.get("image_format"), str):
        return f"image_format is {data.get('image_format')!r}, not a file format"
    quality = data.get("jpeg_quality")
    if not (quality is None or (_is_int(quality) and quality in JPEG_QUALITIES)):
        return f"jpeg_quality is {quality!r}, not a JPEG quality (1 to 100) or null"
    model = data.get("model")
    if not isinstance(model, dict) or not all(isinstance(model.get(key), (str, type(None)))
                                              for key in ("path", "precision", "sha256")):
        return f"model is {data.get('model')!r}, not a record of the model"
    for key in ("backends", "model_paths"):
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            return f"{key} is {value!r}, not a list of names"
    found = data.get("versions", {})
    if not isinstance(found, dict) or not all(
            value is None or isinstance(value, str)
            or (isinstance(value, list) and all(isinstance(item, str) for item in value))
            for value in found.values()):
        return f"versions is {found!r}, not package names with their versions"
    return ""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def merge(old: Optional[dict], new: dict, overwrite: bool, files: Optional[dict] = None) -> dict:
    """The manifest to write for a run `new` into a folder holding `old` (None: no manifest) and the
    sample files `files` (index → names, `imagefiles.existing_files`)."""
    files = files or {}
    if overwrite:
        return new
    if old is None:
        if files:
            raise FolderMismatch("the folder holds sample files but no samples.json, so their model and "
                                 "seed are unknown; use another --outdir or --overwrite")
        return new
    for key in IDENTITY:
        difference = _difference(key, old.get(key), new[key])
        if difference:
            raise FolderMismatch(f"the folder holds samples with {difference}; use another --outdir "
                                 "or --overwrite")
    # an earlier run's samples lie below its n; a name past it is a stray (module docstring)
    painted = [index for index in files if index < old["n"]]
    beyond = sum(1 for index in painted if index >= new["n"])
    if beyond:
        raise FolderMismatch(f"the folder holds {len(painted)} samples, up to index {max(painted)}, and "
                             f"FID tools read every file: --n {new['n']} would leave {beyond} beyond it; "
                             f"give --n {max(painted) + 1} or more, or --overwrite")
    merged = dict(new)
    merged["backends"] = sorted(set(old.get("backends", [])) | set(new["backends"]))
    merged["model_paths"] = model_paths(old, new)
    merged["versions"] = versions(old.get("versions") or {}, new["versions"])
    return merged


def versions(old: dict, new: dict) -> dict:
    """The library versions of every run that painted into the folder: package → version, or the list
    of its versions, earliest first, where the runs used several (onnxruntime's is kept when a later
    run used torch only)."""
    merged = {}
    for package in sorted(set(old) | set(new)):
        seen = []
        for value in (old.get(package), new.get(package)):
            for item in value if isinstance(value, list) else [value]:
                if item is not None and item not in seen:
                    seen.append(item)
        merged[package] = seen[0] if len(seen) == 1 else seen if seen else None
    return merged


def model_paths(old: dict, new: dict) -> list[str]:
    """Every file that painted into the folder (same weights: the identity is the sha256), as absolute
    paths, sorted; `model.path` is the latest run's."""
    paths = set(old.get("model_paths") or [old.get("model", {}).get("path")]) | {new["model"].get("path")}
    return sorted(path for path in paths if path)


def write(folder: Path, manifest: dict) -> Path:
    return atomic_write_json(Path(folder) / MANIFEST, manifest)


def claim(folder: Path, manifest: dict) -> dict:
    """Write `manifest` as the folder's unless another run's is there (FolderMismatch, nothing
    written); return what was written. For shards that share the folder: a manifest is created only
    where none exists (one of two racing runs wins), else merged with the one found. Claims take
    turns (`brief_lock`), so no shard's backend, version or model path is lost to another's write."""
    with brief_lock(Path(folder) / CLAIM_LOCK):
        return _claim(folder, manifest)


def _claim(folder: Path, manifest: dict) -> dict:
    for _ in range(CLAIM_ATTEMPTS):
        found = read(folder)
        if found is not None:
            merged = merge(found, manifest, overwrite=False, files=existing_files(Path(folder)))
            write(folder, merged)  # same identity: racing writers differ in their backends at most
            return merged
        try:
            atomic_write_json(Path(folder) / MANIFEST, manifest, exclusive=True)
            return manifest
        except FileExistsError:
            continue  # another run created it first: compare with that one
        except OSError as error:
            if error.errno not in LINK_UNSUPPORTED:
                raise
            write(folder, manifest)  # a file system without hard links: the check above only
            return manifest
    raise FolderMismatch(f"{Path(folder) / MANIFEST} exists but cannot be read as a file; remove it "
                         "or pass --overwrite")


CLAIM_ATTEMPTS = 10
CLAIM_LOCK = ".samples.lock"  # exists only during a claim (common.lock.brief_lock)
LINK_UNSUPPORTED = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK)


def _difference(key: str, old, new) -> str:
    """'' when `old` and `new` agree on `key`, else what differs, named (e.g. "a different precision
    (fp16 vs fp32)")."""
    if key != "model":
        return "" if old == new else f"a different {key.replace('_', ' ')} ({old!r} vs {new!r})"
    old = old if isinstance(old, dict) else {}
    if old.get("sha256") != new.get("sha256"):
        return (f"a different model (checkpoint sha256 {str(old.get('sha256'))[:12]} vs "
                f"{str(new.get('sha256'))[:12]})")
    before, now = _precision(old.get("precision")), _precision(new.get("precision"))
    return "" if before == now else f"a different precision ({before} vs {now})"


def _precision(name) -> str:
    """Precision names, including those of older manifests (float32 → fp32, float16 → fp16)."""
    from fpa_export.runtime.precision import LEGACY_NAMES

    return LEGACY_NAMES.get(name, name) if name is not None else "fp32"
