"""fpa_export.painting and `fpa-gif`: frames, per-sample normalisation, step grids, GIF files."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from fpa_export.models import FPAGenerator, save_checkpoint
from fpa_export.common.images import to_uint8
from fpa_export.cli.gif import main
from fpa_export.painting import (PaintingJob, animation, gif_bytes, mp4_available, open_painter, paint,
                                 render_painting, sample_grid, step_grid)
from fpa_export.painting.frames import display_frames
from fpa_export.runtime import make_sampler
from fpa_export.sampling import SampleRun, latents_for, sample_folder
from fpa_export.sampling.imagefiles import decode
from tests.conftest import make_generator, tiny_config, tiny_unet_config

T = 4


@pytest.fixture(scope="module")
def grey(tmp_path_factory):
    generator = make_generator(11, channels=1)
    return save_checkpoint(tmp_path_factory.mktemp("gif") / "grey.pt", generator), generator


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FPA_EXPORT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _gif_frames(path):
    with Image.open(path) as gif:
        frames, durations = [], []
        for k in range(gif.n_frames):
            gif.seek(k)
            frames.append(np.asarray(gif.convert("L")))
            durations.append(gif.info["duration"])
        return np.stack(frames), durations, gif.info.get("loop")


def test_rescaling_matches_a_float64_reference_per_sample(grey):
    _, generator = grey
    z = latents_for([0], 0, generator.latent_size)
    z = torch.cat([z, 3 * latents_for([0], 1, generator.latent_size)])
    with torch.no_grad():
        painting = generator.paint(z)
    frames = display_frames(painting.updates, painting.partials, generator.config)
    for b in range(2):
        final = painting.partials[b, -1].double()
        for t in range(T):
            for raw, shown in ((painting.updates, frames.updates), (painting.partials, frames.partials)):
                x = raw[b, t].double()
                expected = torch.tanh(x * final.norm() / x.norm())
                torch.testing.assert_close(shown[b, t].double(), expected, atol=1e-5, rtol=0)


def test_frames_of_one_seed_do_not_depend_on_the_others(grey):
    path, _ = grey
    sampler = make_sampler(path, backend="torch")
    alone = paint(sampler, [3])
    together = paint(sampler, [2, 3, 4])
    torch.testing.assert_close(together.partials[1], alone.partials[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(together.updates[1], alone.updates[0], atol=1e-6, rtol=0)


def test_gif_file_frames_size_duration_and_last_frame(grey, tmp_path):
    path, _ = grey
    sample_folder(SampleRun(tmp_path / "samples", n=3, seed=5), model=path, backend="torch",
                  progress=False)
    job = PaintingJob(seeds=[5], index=2, fps=10, scale=3, hold_last_ms=700)
    result = render_painting(open_painter(path), job, gif=tmp_path / "p.gif")
    frames, durations, loop = _gif_frames(tmp_path / "p.gif")
    side = 8 * 3 + 2 * 2
    assert frames.shape == (T, side, side) and result.frame_count == T
    assert durations == [100] * (T - 1) + [700] and loop == 0
    tile = frames[-1, 2:-2, 2:-2][::3, ::3]
    levels = np.abs(tile.astype(int) - decode(tmp_path / "samples" / "000002.png").astype(int))
    assert levels.max() <= 1 and (levels == 0).mean() > 0.95
    assert (frames[:, :2] == 128).all()  # the grey 0.5 padding


def test_modes_tiling_and_the_papers_grid_size(grey):
    _, generator = grey
    frames = display_frames(*_raw_steps(generator, batch=3), generator.config)
    assert animation(frames, "partial", columns=2).shape == (T, 1, 2 * 10 + 2, 2 * 10 + 2)
    assert animation(frames, "both", columns=8).shape == (T, 1, 2 * 10 + 2, 3 * 10 + 2)
    both = animation(frames, "both")
    np.testing.assert_array_equal(both[:, :, 2:10, 2:10], to_uint8(frames.updates[0]).numpy())
    np.testing.assert_array_equal(both[:, :, 12:20, 2:10], to_uint8(frames.partials[0]).numpy())
    paper = FPAGenerator(tiny_config(image_size=64, num_steps=16)).eval()
    picture = step_grid(display_frames(*_raw_steps(paper, batch=1), paper.config))
    assert picture.shape == (3, 134, 1058)  # the paper's 2 × 16 grid of 64-px images
    assert sample_grid(np.zeros((10, 1, 8, 8), np.uint8), columns=4).shape == (1, 32, 42)


def _raw_steps(generator, batch):
    with torch.no_grad():
        painting = generator.paint(torch.randn(batch, generator.latent_size))
    return painting.updates, painting.partials


def test_unet_models_end_with_the_refined_image(tmp_path):
    torch.manual_seed(0)
    generator = FPAGenerator(tiny_config(channels=1, unet=tiny_unet_config(1))).eval()
    sampler = make_sampler(generator, backend="torch")
    frames = paint(sampler, [0, 1])
    with torch.no_grad():
        image = generator(torch.cat([latents_for([0], s, generator.latent_size) for s in (0, 1)]))
    torch.testing.assert_close(frames.refined, image)
    movie = animation(frames, "partial")
    assert movie.shape[0] == T + 1
    np.testing.assert_array_equal(movie[-1, 0, 2:10, 2:10], to_uint8(image[0, 0]).numpy())
    assert step_grid(frames).shape == (1, 2 * 2 * 10 + 2, (T + 1) * 10 + 2)  # 2 seeds × 2 rows


def test_exported_steps_graph_gives_the_same_frames(grey, tmp_path):
    from fpa_export.export import export_onnx

    path, _ = grey
    onnx_path = export_onnx(path, tmp_path / "steps.onnx", graph="steps", exporter="torchscript").path
    job = PaintingJob(seeds=[0, 1, 2], mode="both", scale=1)
    from_torch = render_painting(open_painter(path), job, gif=tmp_path / "t.gif")
    from_onnx = render_painting(open_painter(onnx_path), job, gif=tmp_path / "o.gif")
    a, b = _gif_frames(tmp_path / "t.gif")[0], _gif_frames(tmp_path / "o.gif")[0]
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert from_torch.frame_size == from_onnx.frame_size


def test_gif_delays_are_in_milliseconds():
    frames = np.stack([np.full((4, 4), k * 60, np.uint8) for k in range(4)])
    with Image.open(io.BytesIO(gif_bytes(frames, fps=25, hold_last_ms=1000))) as gif:
        delays = []
        for k in range(gif.n_frames):
            gif.seek(k)
            delays.append(gif.info["duration"])
    assert delays == [40, 40, 40, 1000]


def test_cli(grey, tmp_path):
    path, _ = grey
    runner = CliRunner()
    result = runner.invoke(main, [str(path), "--seeds", "0-2", "-o", str(tmp_path / "a.gif"),
                                  "--grid", str(tmp_path / "g.png"), "--mode", "both"])
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "a.gif") in result.output and "3 seed(s)" in result.output
    with Image.open(tmp_path / "g.png") as picture:
        assert picture.size == (T * 66 + 2, 3 * 2 * 66 + 2)  # 8-px tiles upscaled ×8 to 64 px
    for args, text in (([str(path), "--seed", "1", "--seeds", "0-3"], "not both"),
                       ([str(path), "--seeds", "3-1"], "a range runs upwards (1-3)"),
                       ([str(tmp_path / "nope.pt")], "does not exist")):
        result = runner.invoke(main, args)
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert text in result.output.strip().splitlines()[-1]
    if not mp4_available():
        result = runner.invoke(main, [str(path), "--mp4", str(tmp_path / "a.mp4")])
        assert result.exit_code == 1 and "fpa-export[video]" in result.output
        assert not (tmp_path / "a.mp4").exists()


def test_columns_apply_only_to_an_animation_of_several_seeds(grey, tmp_path):
    path, _ = grey
    for args, when in ((["-o", str(tmp_path / "a.gif")], "to an animation of several seeds"),
                       (["--grid", str(tmp_path / "g.png"), "--seeds", "0-3"], "to an animation (-o or --mp4)")):
        result = CliRunner().invoke(main, [str(path), "--columns", "2", *args])
        assert result.exit_code == 2 and f"--columns applies only {when}" in result.output, result.output
    assert not list(tmp_path.iterdir())
    result = CliRunner().invoke(main, [str(path), "--columns", "2", "--seeds", "0-3", "-o", str(tmp_path / "a.gif")])
    assert result.exit_code == 0, result.output


def test_limits_are_checked_before_painting(grey, tmp_path, monkeypatch):
    from fpa_export.cli import gif
    from fpa_export.painting import layout, render, writers

    # fpa-gif spells these out so that --help stays light
    assert gif.MODES == layout.MODES and gif.MAX_SCALE == render.MAX_SCALE
    assert gif.MIN_FPS == render.MIN_FPS and gif.MAX_DELAY_MS == writers.MAX_DELAY_MS
    path, generator = grey
    out = tmp_path / "a.gif"
    for args in (["--seeds", "0-1000000"], ["--seeds", "0-20000"], ["--seeds", "0-"], ["--scale", "17"],
                 ["--fps", "0.001"], ["--hold-last", "60001"], ["--seed", "-1"]):
        result = CliRunner().invoke(main, [str(path), "-o", str(out), *args])
        assert result.exit_code != 0 and "Traceback" not in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, (args, result.output)
    assert not out.exists()

    def refuses_painting(*args, **kwargs):
        raise AssertionError("painted before the size was checked")

    monkeypatch.setattr(render, "paint", refuses_painting)
    with pytest.raises(render.FpaError, match="65,535 px a side"):
        render_painting(generator, PaintingJob(seeds=range(20_000)), gif=out)
    monkeypatch.setattr(render, "MAX_MEMORY", 1 << 20)
    with pytest.raises(render.FpaError, match=r"64 seed\(s\) in tiles of 64 px need about"):
        render_painting(generator, PaintingJob(seeds=range(64)), gif=out)


def test_the_size_check_knows_the_real_geometry(grey):
    from fpa_export.painting.layout import animation_size, picture_size

    _, generator = grey
    frames = display_frames(*_raw_steps(generator, batch=5), generator.config)
    for mode in ("partial", "both"):
        for columns in (1, 2, 8):
            picture = animation(frames, mode, columns=columns, scale=3)
            assert animation_size(5, columns, mode, 8 * 3) == (picture.shape[3], picture.shape[2])
    picture = step_grid(frames, scale=2)
    assert picture_size(2 * 5, T, 8 * 2) == (picture.shape[2], picture.shape[1])
