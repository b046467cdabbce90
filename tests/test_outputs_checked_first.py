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
