"""Image files of a sample folder: names, encoding, atomic writes and validity checks.

Files are `{index:06d}.png` or `.jpg`, uint8 by `fpa_export.common.images.to_uint8` (clamp to [0, 1], as the paper
saves its samples). Each file is encoded in memory, written to a hidden temporary file beside its final
name and renamed over it, so a reader (or a rerun after Ctrl-C or kill -9) sees either no file or a whole
one. There is no fsync per file: after a power loss a renamed file may come back empty or truncated, and
a rerun finds it because it decodes every existing file before skipping it (`is_valid`).

Writing thousands of small files is a measurable share of a sampling run, so the two costs per file are
kept low: `SampleFiles` writes relative to the folder's open descriptor (os-level calls, no path objects:
10,000 files in 0.41–0.57 s against 0.80–1.20 s path-based, 2-core CPU, ext4, after a sync; this file
system's speed varied up to 3× between runs), and `png_level` stores images that fit one 4 KiB block
uncompressed (see there).
"""
from __future__ import annotations

import io
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from fpa_export.common.errors import FpaError, size_text
from fpa_export.runtime.names import SAMPLE_FORMATS as FORMATS

JPEG_QUALITIES = range(1, 101)  # what --jpeg-quality takes and a samples.json may record

PNG_BLOCK = 4096   # bytes: the allocation block of common file systems (ext4, xfs, NTFS, APFS)
PNG_OVERHEAD = 68  # bytes of a stored PNG (< 64 KiB) beyond its rows: signature, chunks, zlib frame
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAME = re.compile(r"^(\d{6,})\.(png|jpg)$")
TEMP = re.compile(r"^\.(\d{6,})\.(png|jpg)\.(\d+)\.tmp$")  # index, format, pid of the writer


def file_name(index: int, fmt: str) -> str:
    return f"{index:06d}.{fmt}"


def image_shape(size: int, channels: int) -> tuple[int, ...]:
    """The array shape of one sample file's image: (S, S) greyscale or (S, S, 3) RGB."""
    return (size, size) if channels == 1 else (size, size, 3)


def png_level(shape: tuple[int, ...]) -> int:
    """The zlib level for PNGs of images of `shape` ((S, S) or (S, S, 3)); lossless either way.

    0 (stored) when the stored file fits one 4 KiB block: such a file takes one block on disk whatever
    its compression, and compressing it is most of its encoding time (10,000 default-model images,
    32×32 grey, 2-core CPU: zlib level 1 took 0.58 s for files of about 710 bytes, level 0 0.03 s for
    1,124-byte ones). Larger images use level 1, which encodes faster than the default 6 at nearly
    its size.
    """
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    return 0 if height * (1 + width * channels) + PNG_OVERHEAD <= PNG_BLOCK else 1


MIN_FILE_BYTES = 100  # fewer than any PNG or JPEG of an image holds (Pillow's JPEG headers alone ~600)


def smallest_file(shape: tuple[int, ...], fmt: str) -> int:
    """A lower bound of the bytes of one sample file: exact for a stored PNG (`png_level` 0)."""
    height, width = shape[:2]
    channels = shape[2] if len(shape) == 3 else 1
    if fmt == "png" and png_level(shape) == 0:
        return height * (1 + width * channels) + PNG_OVERHEAD
    return MIN_FILE_BYTES


def check_room(folder: Path, count: int, file_bytes: int, replaced: Sequence[Path] = ()) -> None:
    """One line, before any painting, when `count` more files of at least `file_bytes` each cannot fit
    the free space or the free inodes of `folder`'s file system (`--n 100000000000` would otherwise
    paint for days and stop at a full disk), counting the space and inodes of the files `replaced`
    (removed before the new ones are written) as free. A lower bound, so it never refuses a run that
    fits; a run that passes can still fill the disk, and then stops with one line, its finished files
    kept."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        fs = os.statvfs(probe)
    except (OSError, AttributeError):  # no statvfs (Windows) or no answer: nothing to judge by
        return
    free = fs.f_bavail * fs.f_frsize + _bytes_held(replaced)
    inodes = fs.f_favail + len(replaced) if fs.f_files > 0 else None  # 0 total: no inode limit
    if count * file_bytes > free or (inodes is not None and count > inodes):
        fits = min(free // max(1, file_bytes), inodes if inodes is not None else free)
        raise FpaError(f"{folder}: {count:,} more files of at least {file_bytes:,} bytes will not fit: "
                       f"its file system has {size_text(free)}"
                       + (f" and {inodes:,} inodes" if inodes is not None else "")
                       + f" free (room for about {fits:,}); free some space or use a smaller --n")


def _bytes_held(paths: Sequence[Path]) -> int:
    """The disk space `paths` occupy (their blocks), 0 for any that vanished."""
    held = 0
    for path in paths:
        try:
            held += os.stat(path).st_blocks * 512
        except (OSError, AttributeError):
            pass
    return held


def encode(image: np.ndarray, fmt: str, jpeg_quality: int = 95) -> bytes:
    """One uint8 image, (S, S) greyscale or (S, S, 3) RGB → PNG or JPEG bytes."""
    return encode_all(image[None], fmt, jpeg_quality)[0]


def encode_all(images: np.ndarray, fmt: str, jpeg_quality: int = 95) -> list[bytes]:
    """uint8 images (B, S, S) or (B, S, S, 3) → their PNG or JPEG bytes, in order."""
    if fmt == "png":
        return encode_pngs(images)
    if fmt != "jpg":
        raise FpaError(f"format must be one of {FORMATS}, got {fmt!r}")
    from PIL import Image

    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=jpeg_quality)
        encoded.append(buffer.getvalue())
    return encoded


def encode_pngs(images: np.ndarray) -> list[bytes]:
    """Baseline 8-bit PNGs (greyscale or RGB, no interlace, filter type 0 on every row) of a batch.

    Written directly with zlib (at `png_level`), which releases the GIL while it compresses, so
    encoder threads run in parallel; it is 3× faster than Pillow's encoder on small images, and any
    PNG reader decodes it. The rows of the whole batch are laid out in one numpy step and the chunks
    every file shares are built once: per file, only its data chunk is made.
    """
    count, height, width = images.shape[:3]
    rows = np.zeros((count, height, 1 + images[0, 0].size), np.uint8)  # column 0: filter type None
    rows[:, :, 1:] = images.reshape(count, height, -1)
    color_type = 0 if images.ndim == 3 else 2  # greyscale | truecolour
    head = PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
    end = _chunk(b"IEND", b"")
    level, idat_crc = png_level(images.shape[1:]), zlib.crc32(b"IDAT")
    encoded = []
    for image_rows in rows:
        data = zlib.compress(image_rows, level)
        encoded.append(b"".join((head, len(data).to_bytes(4, "big"), b"IDAT", data,
                                 zlib.crc32(data, idat_crc).to_bytes(4, "big"), end)))
    return encoded


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decode(source) -> np.ndarray:
    """Bytes or a path → uint8 (S, S) or (S, S, 3) array (raises OSError/ValueError when broken)."""
    from PIL import Image

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with Image.open(source) as pil:
        pil.load()
        return np.asarray(pil)


class SampleFiles:
    """A sample folder held open while files are written into it (a context manager)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.by_path = not {os.open, os.rename, os.unlink} <= os.supports_dir_fd  # (os.replace: as rename)
        self.fd = None if self.by_path else os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))

    def __enter__(self) -> "SampleFiles":
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def write(self, name: str, data: bytes) -> None:
        """`data` to a temporary file `.{name}.{pid}.tmp` in the folder, then renamed over `name`:
        relative to the folder's descriptor, or by path where the platform has no dir_fd."""
        folder = self.fd  # read once: every step of this file uses the same descriptor
        temp = f".{name}.{os.getpid()}.tmp"
        if self.by_path:
            temp, name = os.path.join(self.folder, temp), os.path.join(self.folder, name)
        elif folder is None:
            raise ValueError(f"{self.folder}: written after it was closed")
        try:
            handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
                             | getattr(os, "O_BINARY", 0), 0o666, dir_fd=folder)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(handle, view):]
            finally:
                os.close(handle)
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException as err:
            try:
                os.unlink(temp, dir_fd=folder)
            except OSError:
                pass
            if isinstance(err, OSError) and err.filename is None:  # os.write names no file: say which
                raise OSError(err.errno, err.strerror, str(Path(self.folder) / Path(name).name)) from err
            raise


def is_valid(path: Path, size: int, channels: int) -> bool:
    """True when `path` decodes completely to an image of the expected size and channel count."""
    try:
        array = decode(path)
    except (OSError, ValueError, SyntaxError):
        return False
    return array.shape == image_shape(size, channels)


def existing_files(folder: Path) -> dict[int, list[str]]:
    """index → names of sample files present in `folder` (any format)."""
    found: dict[int, list[str]] = {}
    if folder.is_dir():
        for entry in os.scandir(folder):
            match = NAME.match(entry.name)
            if match:
                found.setdefault(int(match.group(1)), []).append(entry.name)
    return found


def stray_images(folder: Path, n: int, fmt: str, overwrite: bool = False) -> list[str]:
    """Image files in `folder` that are not samples 0..n-1 in `fmt` (someone's `img_1.png`, a copied
    `000500.png` past --n, a `.jpg` beside a PNG run): FID tools read every image of a folder, so a run
    refuses to add to them. With `overwrite` only files not named as samples count (the run removes
    the sample files itself). Images in subfolders count too (`sub/x.png`: clean-fid's and our readers
    look into them). Sorted names; non-image files (notes, samples.json) are no concern."""
    from fpa_export.common.images import IMAGE_SUFFIXES

    if not folder.is_dir():
        return []
    strays = []
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False) and not NAME.match(entry.name):  # NAME: not_files' concern
            strays.extend(_images_below(Path(entry.path), folder, IMAGE_SUFFIXES))
            continue
        if not entry.name.lower().endswith(IMAGE_SUFFIXES):
            continue
        match = NAME.match(entry.name)
        if match is None:
            strays.append(entry.name)
        elif not overwrite and (entry.name != file_name(int(match.group(1)), fmt)
                                or int(match.group(1)) >= n):
            strays.append(entry.name)
    return sorted(strays)


def _images_below(subfolder: Path, folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    """Every image file under `subfolder`, as paths relative to `folder` (all of them, so the refusal
    counts them right)."""
    return [str((Path(root) / name).relative_to(folder)) for root, _, names in os.walk(subfolder)
            for name in sorted(names) if name.lower().endswith(suffixes)]


def not_files(folder: Path) -> list[str]:
    """Entries of `folder` named as sample files that are not regular files (a folder `000010.png`):
    no run could replace or remove them, so a run refuses the folder before touching anything."""
    if not folder.is_dir():
        return []
    return sorted(entry.name for entry in os.scandir(folder)
                  if NAME.match(entry.name) and not entry.is_file())


def stale_temporaries(folder: Path) -> list[tuple[int, Path]]:
    """Temporary files left by an interrupted run: (index, path). A file whose writer (the pid in its
    name) is this process or another live process on this machine is being written, and not listed."""
    if not folder.is_dir():
        return []
    return [(int(m.group(1)), folder / entry.name) for entry in os.scandir(folder)
            if (m := TEMP.match(entry.name)) and not _alive(int(m.group(3)))]


def _alive(pid: int) -> bool:
    """Is `pid` this process or another live one on this machine?"""
    if pid == os.getpid():
        return True
    if pid <= 0:
        return False  # 0 and negative numbers name process groups, not a writer
    try:
        os.kill(pid, 0)  # no signal sent: only whether the process exists
    except (ProcessLookupError, OverflowError):  # gone, or too large to be a pid
        return False
    except PermissionError:
        return not _zombie(pid)  # another user's process
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that has exited and waits for its parent to reap it (state Z in /proc; Linux): it
    writes nothing more. Elsewhere, or when /proc cannot tell, False."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    fields = stat.rpartition(")")[2].split()  # the name in parentheses may itself hold spaces
    return bool(fields) and fields[0] in ("Z", "X")
