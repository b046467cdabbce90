"""Output formats follow the file's suffix or are refused (issue 15): pictures (.png/.jpg), animations
(.gif, .png/.apng as animated PNG, .mp4), through `fpa_export.painting.writers` and `fpa-gif`."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fpa_export.common.errors import FpaError, MissingExtra
from fpa_export.painting.writers import (mp4_available, write_animation, write_apng, write_gif, write_mp4,
                                         write_picture, write_png)

PNG, GIF, JPEG = b"\x89PNG\r\n\x1a\n", b"GIF8", b"\xff\xd8\xff"


def _frames(count=4, size=10, channels=0):
    rng = np.random.default_rng(0)
    shape = (count, size, size) + ((channels,) if channels else ())
    return rng.integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("name, magic", [("a.gif", GIF), ("a.png", PNG), ("a.APNG", PNG)])
def test_animation_format_follows_the_suffix(tmp_path, name, magic):
    frames = _frames(channels=3)
    path = write_animation(tmp_path / name, frames, fps=10, hold_last_ms=500)
    assert path.read_bytes().startswith(magic)
    with Image.open(path) as image:
        assert image.is_animated and image.n_frames == len(frames)
        if magic == PNG:           # animated PNG: exact colours and millisecond delays
            image.seek(1)
            assert np.array_equal(np.asarray(image.convert("RGB")), frames[1])
            assert image.info["duration"] == 100


def test_greyscale_animated_png_keeps_values_and_holds_the_last_frame(tmp_path):
    frames = _frames()
    path = write_apng(tmp_path / "grey.png", frames, fps=8, hold_last_ms=1500)
    with Image.open(path) as image:
        image.seek(len(frames) - 1)
        assert image.info["duration"] == 1500
        assert np.array_equal(np.asarray(image.convert("L")), frames[-1])


@pytest.mark.parametrize("name", ["a.webm", "a.jpg", "a", "a.gif.txt"])
def test_unknown_animation_suffix_is_refused_in_one_line(tmp_path, name):
    with pytest.raises(FpaError, match="is no animation format we write") as err:
        write_animation(tmp_path / name, _frames(), fps=10, hold_last_ms=0)
    assert "\n" not in str(err.value) and ".gif, .png (animated PNG) or .mp4" in str(err.value)
    assert not list(tmp_path.iterdir())


def test_picture_format_follows_the_suffix(tmp_path):
    picture = _frames(1, 12, 3)[0]
    assert write_picture(tmp_path / "a.jpg", picture).read_bytes().startswith(JPEG)
    assert write_picture(tmp_path / "a.JPEG", picture).read_bytes().startswith(JPEG)
    assert write_picture(tmp_path / "a.png", picture).read_bytes().startswith(PNG)
    with pytest.raises(FpaError, match="name it .png or .jpg"):
        write_picture(tmp_path / "a.bmp", picture)


def test_format_specific_writers_refuse_other_names(tmp_path):
    frames = _frames()
    for writer, name in ((write_gif, "a.png"), (write_apng, "a.gif"), (write_mp4, "a.gif")):
        with pytest.raises(FpaError, match="must be named"):
            writer(tmp_path / name, frames, 10, 0)
    with pytest.raises(FpaError, match="a PNG must be named .png"):
        write_png(tmp_path / "a.jpg", frames[0])
    assert not list(tmp_path.iterdir())


def test_mp4_is_written_without_ffmpeg_warnings(tmp_path, capfd):
    path = tmp_path / "a.mp4"
    if not mp4_available():
        with pytest.raises(MissingExtra):
            write_animation(path, _frames(size=9), fps=8, hold_last_ms=0)
        pytest.skip("imageio-ffmpeg is not installed")
    write_animation(path, _frames(size=9), fps=8, hold_last_ms=250)
    assert path.read_bytes()[4:8] == b"ftyp"
    assert "Multiple -pix_fmt" not in capfd.readouterr().err


def test_fpa_gif_output_follows_the_suffix_or_is_refused(tmp_path):
    from fpa_export.cli.gif import main

    runner = CliRunner()
    out, grid = tmp_path / "paint.png", tmp_path / "steps.jpg"
    result = runner.invoke(main, ["--seeds", "0-1", "-o", str(out), "--grid", str(grid)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(PNG) and grid.read_bytes().startswith(JPEG)
    with Image.open(out) as image:
        assert image.is_animated and image.n_frames > 1
    for args in (["-o", str(tmp_path / "p.txt")], ["--grid", str(tmp_path / "g.tif")],
                 ["--mp4", str(tmp_path / "m.gif")]):
        before = set(tmp_path.iterdir())
        result = runner.invoke(main, args + (["-o", str(tmp_path / "x.gif")] if "-o" not in args else []))
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1
        assert set(tmp_path.iterdir()) == before           # nothing written
