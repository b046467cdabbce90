"""`fpa-vis`: every command runs on an image file and on an FPA sample, writes PNG and GIF, fails cleanly."""
from __future__ import annotations

import numpy as np
import torch
import pytest
from click.testing import CliRunner
from PIL import Image

from fpa_export.cli.vis import main
from fpa_export.common.errors import FpaError
from fpa_export.vis import load_source, parse_source
from fpa_export.models import save_checkpoint
from tests.conftest import make_generator

TINY = ["--width", "4", "--steps", "3", "--size", "32"]


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    photo = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(photo)
    checkpoint = save_checkpoint(tmp_path / "model.pt", make_generator(seed=2))
    return photo, checkpoint


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_invert_writes_png_and_gif_from_a_model_sample(files, tmp_path):
    _, checkpoint = files
    png, gif = tmp_path / "inv.png", tmp_path / "inv.gif"
    result = invoke("invert", f"{checkpoint}@3", "--layer", "conv1_2", "-o", png, "--gif", gif,
                    "--frames", "3", "--scale", "2", "--duration", "50", *TINY)
    assert result.exit_code == 0, result.output
    assert "Wrote" in result.output and "image 0 of seed 3 of model.pt" in result.output
    assert Image.open(png).size == (64, 64)
    import imageio.v3 as iio
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] >= 3 and frames.shape[1:3] == (64, 64)
    assert iio.immeta(gif, index=0)["duration"] == 50


def test_texture_and_style_on_files_and_the_default_model(files, tmp_path):
    photo, _ = files
    out = tmp_path / "tex.png"
    result = invoke("texture", photo, "--out-size", "40", "-o", out, "--layers", "conv1_1,pool1", *TINY)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (40, 40)
    out = tmp_path / "style.png"
    result = invoke("style", photo, "default@1", "-o", out, "--style-weight", "0.5", *TINY)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (32, 32)


def test_stacked_invert_runs(files, tmp_path):
    photo, _ = files
    result = invoke("invert", photo, "--layer", "conv1_2", "--stacked", "2", "--stacked-steps", "2",
                    "-o", tmp_path / "s.png", *TINY)
    assert result.exit_code == 0, result.output
    assert "stacked ranvgg chose draws conv1_1:" in result.output.lower()


@pytest.mark.parametrize("args, message", [
    (["invert", "nope.png"], "no such file"),
    (["invert", "{photo}", "--layer", "conv9_9"], "unknown layer"),
    (["texture", "{photo}", "--layers", "pool1,fc7"], "unknown layer"),
    (["style", "{photo}", "{bad}"], "bad.pt"),
])
def test_mistakes_are_one_line_errors(files, tmp_path, args, message):
    photo, _ = files
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = invoke(*[a.format(photo=photo, bad=bad) for a in args], *TINY)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert message in result.output.lower(), result.output


def test_source_syntax(files):
    photo, checkpoint = files
    assert parse_source("default@7") == ("model", None, 7)
    assert parse_source("default", default_seed=2) == ("model", None, 2)
    assert parse_source(f"{checkpoint}@5")[::2] == ("model", 5)
    assert parse_source(str(photo))[0] == "image"
    for wrong in ("default@x", "default@-1", f"{checkpoint}@", f"{checkpoint}@1.5"):
        with pytest.raises(FpaError, match="the seed after '@' is a non-negative integer"):
            parse_source(wrong)                        # the seed is named, not "no such file"
    with pytest.raises(FileNotFoundError, match="no such file"):
        parse_source(f"{checkpoint}x@3")
    image, _ = load_source("default@4")
    again, _ = load_source("default", seed=4)
    other, _ = load_source("default@5")
    assert image.shape[1] == 3 and (image == again).all() and not (image == other).all()


def test_output_format_follows_the_suffix(files, tmp_path):
    photo, _ = files
    jpg, movie = tmp_path / "inv.jpg", tmp_path / "inv.png"
    result = invoke("invert", photo, "--layer", "conv1_1", "-o", jpg, "--gif", movie, "--frames", "2", *TINY)
    assert result.exit_code == 0, result.output
    assert jpg.read_bytes().startswith(b"\xff\xd8\xff")                   # JPEG, not PNG data
    with Image.open(movie) as image:                                     # an animated PNG
        assert image.format == "PNG" and image.is_animated


@pytest.mark.parametrize("args", [["-o", "{tmp}/out.txt"], ["--gif", "{tmp}/out.jpg"], ["-o", "{tmp}/noext"]])
def test_unknown_output_suffix_is_refused_before_any_work(files, tmp_path, args):
    photo, _ = files
    result = invoke("texture", photo, *[a.format(tmp=tmp_path) for a in args], "--steps", "100000",
                    "--width", "4", "--size", "32")
    assert result.exit_code == 1 and result.output.startswith("Error: "), result.output
    assert "format we write" in result.output and len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "photo.png"]


def test_exported_graphs_are_sources_on_their_own_runtime(files, tmp_path):
    """fpa-vis has no --backend: an .onnx image graph runs in onnxruntime and paints the checkpoint's
    sample; a steps-only graph is refused in one line that names what to pass."""
    pytest.importorskip("onnxruntime")
    from fpa_export.export import export_onnx

    _, checkpoint = files
    image_graph = export_onnx(checkpoint, tmp_path / "m.onnx", exporter="torchscript").path
    steps_graph = export_onnx(checkpoint, tmp_path / "s.onnx", graph="steps", exporter="torchscript").path
    from_onnx, described = load_source(f"{image_graph}@3")
    from_checkpoint, _ = load_source(f"{checkpoint}@3")
    assert described.startswith("image 0 of seed 3 of m.onnx")
    assert (from_onnx - from_checkpoint).abs().max() <= 1 / 255       # at most one uint8 level
    result = invoke("invert", steps_graph, "-o", tmp_path / "x.png", *TINY)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "needs an image graph" in result.output and "--graph image" in result.output
    assert "backend" not in result.output                               # no option fpa-vis lacks


def test_model_at_seed_is_image_zero_of_fpa_sample_with_that_seed(files, tmp_path):
    """One seed rule: `X@3` is 000000.png of `fpa-sample X --seed 3` (and fpa-gif --seeds 3)."""
    from fpa_export.cli.sample import main as sample_main

    _, checkpoint = files
    out = tmp_path / "samples"
    result = CliRunner().invoke(sample_main, [str(checkpoint), "--n", "1", "--seed", "3", "--outdir", str(out),
                                              "--backend", "torch"])
    assert result.exit_code == 0, result.output
    saved = np.asarray(Image.open(out / "000000.png").convert("RGB"))
    image, _ = load_source(f"{checkpoint}@3")
    assert np.array_equal((image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy(), saved)
    other, _ = load_source(f"{checkpoint}@4")
    assert not torch.equal(image, other)


@pytest.mark.parametrize("args", [["invert", "default", "--size", "100000"],
                                  ["texture", "default", "--out-size", "5000"]])
def test_sizes_beyond_the_limit_are_one_line(args, tmp_path):
    from click.testing import CliRunner

    from fpa_export.cli.vis import main

    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "v.png"), "--steps", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "at most 1024 px" in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "v.png").exists()


def test_a_network_width_beyond_the_limit_is_a_usage_error(tmp_path):
    from click.testing import CliRunner

    from fpa_export.cli.vis import MAX_WIDTH, main

    result = CliRunner().invoke(main, ["invert", "default", "--width", str(MAX_WIDTH + 1), "-o",
                                       str(tmp_path / "v.png")])
    assert result.exit_code == 2 and f"4<=x<={MAX_WIDTH}" in result.output and not (tmp_path / "v.png").exists()
