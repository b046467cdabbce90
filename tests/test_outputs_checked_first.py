"""Output files are checked writable before the work starts (fpa-gif, fpa-fd --save-stats,
fpa-sample stats): a folder that cannot take them fails in one line, at once."""
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fpa_export.common.atomic import check_writable
from fpa_export.common.errors import FpaError


@pytest.fixture
def blocked(tmp_path):
    """A path whose 'folder' is a regular file: nothing can be written under it, even by root."""
    wall = tmp_path / "wall"
    wall.write_text("not a folder")
    return wall


def test_check_writable_refuses_a_file_as_folder_and_a_directory_as_file(blocked, tmp_path):
    with pytest.raises(FpaError, match="is not a directory"):
        check_writable(blocked / "out.gif")
    with pytest.raises(FpaError, match="is a directory"):
        check_writable(tmp_path)
    check_writable(tmp_path / "new" / "deeper" / "out.png")  # missing folders are fine: created later
    assert not (tmp_path / "new").exists()


def test_fpa_gif_fails_before_painting(blocked, monkeypatch):
    from fpa_export.cli.gif import main
    from fpa_export.painting import render

    def must_not_paint(*args, **kwargs):
        raise AssertionError("painted before checking the output")

    monkeypatch.setattr(render, "paint", must_not_paint)
    result = CliRunner().invoke(main, ["--seeds", "0", "-o", str(blocked / "p.gif")])
    assert result.exit_code == 1 and "is not a directory" in result.output.strip().splitlines()[-1]


@pytest.mark.parametrize("command", ["fd", "stats"])
def test_statistics_outputs_fail_before_the_features(command, blocked, tmp_path, monkeypatch):
    from fpa_export.fd import metric

    real = tmp_path / "real"
    real.mkdir()
    for k in range(3):
        Image.fromarray(np.full((32, 32, 3), 60 * k, dtype=np.uint8)).save(real / f"{k}.png")
    monkeypatch.setattr(metric, "compute_stats", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("features computed before checking the output")))
    if command == "fd":
        from fpa_export.cli.fd import main
        args = [str(real), "--save-stats", str(blocked / "s.npz")]
    else:
        from fpa_export.cli.sample import main
        args = ["stats", str(real), "-o", str(blocked / "s.npz")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "is not a directory" in result.output.strip().splitlines()[-1]


@pytest.mark.parametrize("option", ["-o", "--gif"])
def test_fpa_vis_fails_before_optimising(option, blocked, tmp_path, monkeypatch):
    from fpa_export.cli.vis import main
    from fpa_export.vis import commands

    monkeypatch.setattr(commands, "invert", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("optimised before checking the output")))
    target = blocked / ("x.png" if option == "-o" else "x.gif")
    extra = [] if option == "-o" else ["-o", str(tmp_path / "x.png")]
    result = CliRunner().invoke(main, ["invert", "default", "--steps", "1", "--width", "4", option,
                                       str(target), *extra])
    assert result.exit_code == 1 and "is not a directory" in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("weight", ["nan", "inf"])
def test_fpa_vis_style_refuses_a_non_finite_weight(weight, tmp_path):
    from fpa_export.cli.vis import main

    out = tmp_path / "style.png"
    result = CliRunner().invoke(main, ["style", "default", "default@1", "--steps", "1", "--width", "4",
                                       "--style-weight", weight, "-o", str(out)])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and lines[-1].startswith("Error: --style-weight must be a positive finite")
    assert not out.exists()


def test_a_non_finite_optimisation_writes_nothing():
    import torch

    from fpa_export.vis.optimize import lbfgs

    with pytest.raises(FpaError, match="non-finite"):
        lbfgs(torch.full((1, 3, 4, 4), 0.5), lambda x: ((x * float("nan")).sum(), {}), steps=1,
              progress=False)


def test_a_folder_where_the_sidecar_belongs_is_refused_before_the_export(tmp_path):
    from fpa_export.cli.export import main

    (tmp_path / "x.onnx.json").mkdir()
    result = CliRunner().invoke(main, ["onnx", "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1, result.output
    assert "x.onnx.json: a folder, not a file, where the sidecar" in result.output.strip().splitlines()[-1]
    assert not (tmp_path / "x.onnx").exists()  # no graph left without its sidecar


def test_an_atomic_write_error_names_the_target_not_its_temporary_file(tmp_path):
    from fpa_export.common.atomic import atomic_write_bytes

    (tmp_path / "out.json").mkdir()  # the rename onto it fails
    with pytest.raises(OSError) as err:
        atomic_write_bytes(tmp_path / "out.json", b"{}")
    assert err.value.filename == str(tmp_path / "out.json")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left


def test_a_full_disk_while_writing_names_the_target(tmp_path):
    """A write's own error names no file (Python's file objects do not): the one line must name it."""
    import errno

    from fpa_export.common.atomic import atomic_write

    def no_room(handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as err:
        atomic_write(tmp_path / "stats.npz", no_room)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "stats.npz")
    assert list(tmp_path.iterdir()) == []


def test_a_pipe_or_device_is_refused_as_an_output_and_left_alone(tmp_path):
    import os

    from fpa_export.common.atomic import atomic_write_bytes

    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(FpaError, match="pipe.npz: not a regular file"):
        check_writable(tmp_path / "pipe.npz")
    with pytest.raises(FpaError, match="pipe.npz: not a regular file"):
        atomic_write_bytes(tmp_path / "pipe.npz", b"x")
    assert not (tmp_path / "pipe.npz").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["pipe.npz"]
