"""Real-image preprocessing against torchvision's Resize(S) + CenterCrop(S), written here independently
of `fpa_export.common.images` from torchvision's formulas (torchvision itself cannot be installed here):

    Resize(S):     short, long = min(w, h), max(w, h); new_long = int(S * long / short)
    CenterCrop(S): top = int(round((h - S) / 2.0)), left = int(round((w - S) / 2.0))

plus formats (tif/tiff, upper-case suffixes), decompression bombs, and the paper's real-image folder.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from fpa_export.common.images import iter_image_batches, list_images, load_image, resize_center_crop
from fpa_export.fd.realfolder import write_real_folder


def torchvision_reference(image: Image.Image, size: int) -> np.ndarray:
    w, h = image.size
    if w <= h:
        ow, oh = size, int(size * h / w)
    else:
        oh, ow = size, int(size * w / h)
    if (ow, oh) != (w, h):
        image = image.resize((ow, oh), resample=Image.Resampling.BILINEAR)
    top = int(round((oh - size) / 2.0))
    left = int(round((ow - size) / 2.0))
    return np.asarray(image)[top:top + size, left:left + size]


ASPECTS = [(256, 342), (342, 256), (64, 64), (65, 64), (64, 67), (100, 37), (37, 100), (33, 500),
           (500, 33), (17, 16), (16, 19), (31, 31), (1000, 999), (299, 113), (64, 97), (97, 64),
           (10, 10), (12, 40), (128, 129), (75, 333)]


@pytest.mark.parametrize("size", [16, 32, 64])
def test_resize_center_crop_equals_torchvision_over_many_aspect_ratios(size):
    rng = np.random.default_rng(size)
    for width, height in ASPECTS:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        got = np.asarray(resize_center_crop(image, size))
        assert got.shape == (size, size, 3)
        np.testing.assert_array_equal(got, torchvision_reference(image, size), err_msg=f"{width}×{height}")


def test_the_one_pixel_crop_shift_of_the_old_floor_formula_is_gone():
    """256×342 → 64: the long side is 85, (85 − 64) / 2 = 10.5 → torchvision rounds to 10 (banker's),
    and 85 comes from int(64 · 342 / 256) = 85 (round() would give 86)."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (342, 256, 3), dtype=np.uint8))
    resized = image.resize((64, 85), resample=Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(np.asarray(resize_center_crop(image, 64)),
                                  np.asarray(resized)[10:74])


def test_tiff_and_upper_case_suffixes_are_read(tmp_path):
    rng = np.random.default_rng(1)
    for name in ("a.tif", "b.TIFF", "c.PNG", "d.JpG"):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "e.gif").write_bytes(b"GIF89a")
    paths = list_images(tmp_path)
    assert [p.name for p in paths] == ["a.tif", "b.TIFF", "c.PNG", "d.JpG"]
    assert load_image(paths[0], 16, 3).shape == (3, 16, 16)


def test_sixteen_bit_greyscale_is_scaled_to_eight_bits_not_clipped_to_white(tmp_path):
    ramp = (np.arange(32 * 32).reshape(32, 32) * 64).astype(np.uint16)  # 0 … 65472
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    expected = np.rint(ramp / 257.0) / 255.0
    for channels in (1, 3):
        image = load_image(tmp_path / "deep.png", 32, channels).numpy()
        assert image.shape == (channels, 32, 32)
        assert np.abs(image - expected[None]).max() <= 1 / 255 + 1e-6
    Image.fromarray(np.full((8, 8), 200, np.int32)).save(tmp_path / "wide.tif")  # mode I, 8-bit values
    assert np.allclose(load_image(tmp_path / "wide.tif", 8, 1).numpy(), 200 / 255)


def bomb_png(path, side=16000):
    """A PNG whose header claims side×side pixels (Pillow refuses it at open: decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))
    return path


def test_bombs_and_undecodable_files_are_skipped_and_counted_in_batches(tmp_path):
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(tmp_path / "good.png")
    bomb_png(tmp_path / "huge.png")
    (tmp_path / "junk.jpg").write_bytes(b"not a jpeg")
    batches = list(iter_image_batches(list_images(tmp_path), 16, 1, batch_size=8))
    assert len(batches) == 1
    images, skipped = batches[0]
    assert images.shape == (1, 1, 16, 16) and skipped == 2


def test_oversized_image_below_pillows_hard_limit_is_skipped(tmp_path, monkeypatch):
    from fpa_export.common import images

    Image.fromarray(np.zeros((30, 30), dtype=np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 800)
    with pytest.raises(images.UnreadableImage, match="over the limit"):
        images.load_image(tmp_path / "big.png", 16, 1)


def test_real_folder_for_fid_goes_through_the_transform_and_the_jpeg_round_trip(tmp_path):
    import io

    rng = np.random.default_rng(2)
    src = tmp_path / "src"
    src.mkdir()
    originals = [rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8) for i in range(3)]
    for i, array in enumerate(originals):
        Image.fromarray(array).save(src / f"{i}.png")
    (src / "broken.png").write_bytes(b"junk")
    written, skipped = write_real_folder(src, tmp_path / "real", 16)
    assert (written, skipped) == (3, 1)
    files = sorted((tmp_path / "real").iterdir())
    assert [f.name for f in files] == ["000000.jpg", "000001.jpg", "000002.jpg"]
    expected = io.BytesIO()
    Image.fromarray(torchvision_reference(Image.fromarray(originals[0]), 16)).save(expected, "JPEG")
    assert files[0].read_bytes() == expected.getvalue()  # Pillow's default JPEG quality is 75


def test_real_stats_skip_a_decompression_bomb(tmp_path):
    from fpa_export.fd.realstats import prepare_real_stats

    for i in range(2):
        Image.fromarray(np.full((20, 20, 3), 60 * i, dtype=np.uint8)).save(tmp_path / f"good{i}.png")
    bomb_png(tmp_path / "huge.png")
    _, skipped = prepare_real_stats(tmp_path, tmp_path / "stats.npz", seeds=(0,), batch_size=4)
    assert skipped == 1


def test_training_folder_skips_and_counts_a_decompression_bomb(tmp_path):
    from fpa_export.training.data import batches, open_source

    for i in range(3):
        Image.fromarray(np.full((20, 20), 50 * i, dtype=np.uint8)).save(tmp_path / f"ok{i}.png")
    bomb_png(tmp_path / "huge.png")
    source = open_source(str(tmp_path), 16, 1)
    batch = next(batches(source, 4, seed=0))
    assert batch.shape == (4, 1, 16, 16) and source.skipped == 1
