"""The real-image folder for FID tools (`fpa-sample stats --write-folder`), written so that a stop never
leaves it half-made for good.

Every image under the source folder goes through the training transform (`common.images`) and is
saved as `NNNNNN.jpg|png`, encoded as samples are (`sampling.imagefiles.encode`, the round trip that
`fpa-sample stats -o` puts the real images through too). While the folder is being written it holds a record,
`.real-images.partial.json` (the source and the settings; no FID tool reads it), which goes once the last
image is written. So:

- a folder with files but no record is someone else's (or a finished one): refused, nothing touched;
- a folder with the record was stopped part-way (Ctrl-C, a full disk, kill -9): the same command
  finishes it (every image is written again, atomically, and names beyond the new count are removed);
  other settings are refused, naming what differs.

Imports no torch: only Pillow and numpy.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from fpa_export.common.atomic import TEMP_NAME, atomic_write_bytes, atomic_write_json, sweep_stale_temps
from fpa_export.common.errors import FpaError
from fpa_export.common.images import IMAGE_SUFFIXES, UnreadableImage, check_outside, list_images, \
    load_image_array
from fpa_export.sampling.imagefiles import encode

PARTIAL = ".real-images.partial.json"
FORMAT = "fpa-real-images"
SETTINGS = ("source", "size", "channels", "image_format", "jpeg_quality")


def write_real_folder(image_dir: str | Path, out: str | Path, size: int, channels: int = 3,
                      image_format: str = "jpg", jpeg_quality: int = 75) -> tuple[int, int]:
    """The paper's real-image folder for FID tools: every image under `image_dir` through the training
    transform, saved as `out/NNNNNN.jpg` (JPEG at `jpeg_quality`, the fakes' round trip) or `.png`.
    Returns (written, skipped): unreadable or oversized files are skipped. A folder this function was
    stopped in is finished by the same call (module docstring)."""
    if image_format not in ("jpg", "png"):
        raise FpaError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    check_outside(out, image_dir)  # the copies would be read as real images
    out = Path(out)
    wanted = {"format": FORMAT, "source": os.path.realpath(image_dir), "size": size, "channels": channels,
              "image_format": image_format,
              "jpeg_quality": jpeg_quality if image_format == "jpg" else None}
    _check_folder(out, wanted)
    paths = list_images(image_dir)
    if not paths:
        raise FpaError(f"{image_dir}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    atomic_write_json(out / PARTIAL, wanted)  # first: a stop from here on leaves a folder to finish
    written = skipped = 0
    for path in paths:
        try:
            array = load_image_array(path, size, channels)
        except UnreadableImage:
            skipped += 1
            continue
        atomic_write_bytes(out / f"{written:06d}.{image_format}", encode(array, image_format, jpeg_quality))
        written += 1
    for index, name in _numbered(out):  # an earlier, stopped run of a source that held more images
        if index >= written:
            os.unlink(out / name)
    sweep_stale_temps(out, 0)  # no other writer: the caller holds the folder's lock
    os.unlink(out / PARTIAL)
    return written, skipped


def _check_folder(out: Path, wanted: dict) -> None:
    """Refuse a folder that holds files not of a stopped run with these settings (module docstring)."""
    if not out.is_dir() or not any(os.scandir(out)):
        return
    record = _read_partial(out)
    if record is None:  # old files would be scored beside the new
        raise FpaError(f"{out}: this folder holds files already (FID tools would read them with the "
                       "real images); give a new or empty folder")
    try:  # the same images, named through a link or as the link's target
        record = {**record, "source": os.path.realpath(record["source"])}
    except (KeyError, TypeError, ValueError):  # none, not a path, or one with a NUL: compared as it is
        pass
    differs = [f"{key} {record.get(key)!r} vs {wanted[key]!r}" for key in SETTINGS
               if record.get(key) != wanted[key]]
    if differs:
        raise FpaError(f"{out}: holds a stopped real-image folder of other settings ({'; '.join(differs)}); "
                       "give the same options to finish it, or a new folder")
    ours = re.compile(r"\d{6}\." + re.escape(wanted["image_format"]))
    strangers = [entry.name for entry in os.scandir(out) if entry.name != PARTIAL and not (
        entry.is_file(follow_symlinks=False)  # a folder named 000030.png is no image of ours
        and (ours.fullmatch(entry.name) or TEMP_NAME.fullmatch(entry.name)))]
    if strangers:
        raise FpaError(f"{out}: holds {strangers[0]}, which this command did not write (FID tools would "
                       "read it with the real images); move it away, or give a new folder")


def _read_partial(out: Path):
    try:
        record = json.loads((out / PARTIAL).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def _numbered(out: Path) -> list[tuple[int, str]]:
    """(index, name) of the `NNNNNN.jpg|png` files in `out`."""
    found = []
    for entry in os.scandir(out):
        match = re.fullmatch(r"(\d{6})\.(?:jpg|png)", entry.name)
        if match and entry.is_file(follow_symlinks=False):
            found.append((int(match.group(1)), entry.name))
    return found
