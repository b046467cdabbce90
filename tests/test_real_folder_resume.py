"""`fpa-sample stats --write-folder` stopped part-way (Ctrl-C, a full disk) leaves a folder the same
command finishes; other settings, or files it did not write, are refused with nothing touched."""
from __future__ import annotations

import errno

import pytest
from click.testing import CliRunner

from fpa_export.cli.sample import main
from fpa_export.fd import realfolder
from tests.conftest import flat_images


@pytest.fixture
def real(tmp_path):
    return flat_images(tmp_path / "real", [0, 40, 80, 120, 160], (20, 24, 3))


def _stats(real, out, *extra):
    return CliRunner().invoke(main, ["stats", str(real), "--write-folder", str(out), *extra])


def _contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _stop_after(monkeypatch, images, error):
    real_write = realfolder.atomic_write_bytes
    done = []

    def stopping(path, data, *args):
        if path.name != realfolder.PARTIAL and len(done) == images:
            raise error
        done.append(path)
        return real_write(path, data, *args)

    monkeypatch.setattr(realfolder, "atomic_write_bytes", stopping)


@pytest.mark.parametrize("stop", ["ctrl-c", "disk full"])
def test_a_stopped_real_folder_is_finished_by_the_same_command(real, tmp_path, monkeypatch, stop):
    assert _stats(real, tmp_path / "fresh").exit_code == 0
    expected = _contents(tmp_path / "fresh")
    out = tmp_path / "out"
    error = KeyboardInterrupt() if stop == "ctrl-c" else OSError(errno.ENOSPC, "No space left on device")
    with monkeypatch.context() as patch:
        _stop_after(patch, 2, error)
        stopped = _stats(real, out)
    assert stopped.exit_code == (130 if stop == "ctrl-c" else 1) and "Traceback" not in stopped.output
    assert sorted(_contents(out)) == [realfolder.PARTIAL, "000000.png", "000001.png"]
    finished = _stats(real, out)
    assert finished.exit_code == 0, finished.output
    assert _contents(out) == expected  # no record left: FID tools see only the images
    again = _stats(real, out)  # a finished folder is a folder of files: refused as before
    assert again.exit_code == 1 and "holds files already" in again.output


def test_a_stopped_folder_of_other_settings_or_with_a_strangers_file_is_refused(real, tmp_path,
                                                                                monkeypatch):
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _stop_after(patch, 2, KeyboardInterrupt())
        _stats(real, out)
    before = _contents(out)
    other = _stats(real, out, "--format", "jpg")
    assert other.exit_code == 1 and "Traceback" not in other.output
    assert "stopped real-image folder of other settings (image_format 'png' vs 'jpg'" in other.output
    assert _contents(out) == before
    (out / "000030.png").mkdir()  # named as an image of ours, but a folder: FID tools would trip on it
    inside = _stats(real, out)
    assert inside.exit_code == 1 and "holds 000030.png, which this command did not write" in inside.output
    (out / "000030.png").rmdir()
    (out / "notes.txt").write_text("mine")
    stranger = _stats(real, out)
    assert stranger.exit_code == 1 and "holds notes.txt, which this command did not write" in stranger.output
    assert _contents(out) == {**before, "notes.txt": b"mine"}


@pytest.mark.parametrize("first_through_link", [False, True])
def test_a_stopped_folder_is_finished_through_a_link_to_its_source(real, tmp_path, monkeypatch,
                                                                   first_through_link):
    """The same images named through a symbolic link (or by the link's target) are the same source."""
    link = tmp_path / "link-to-real"
    link.symlink_to(real, target_is_directory=True)
    first, then = (link, real) if first_through_link else (real, link)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _stop_after(patch, 2, KeyboardInterrupt())
        _stats(first, out)
    finished = _stats(then, out)
    assert finished.exit_code == 0, finished.output
    assert sorted(_contents(out)) == [f"{k:06d}.png" for k in range(5)]


def test_a_record_naming_an_impossible_source_is_refused_in_one_line(real, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _stop_after(patch, 2, KeyboardInterrupt())
        _stats(real, out)
    record = out / realfolder.PARTIAL
    record.write_text(record.read_text().replace(str(real).replace("\\", "\\\\"), "a\\u0000b"))
    again = _stats(real, out)
    assert again.exit_code == 1 and "Traceback" not in again.output, again.output
    assert "other settings (source 'a\\x00b'" in again.output


def test_a_source_that_lost_images_since_the_stop_leaves_no_stale_names(real, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _stop_after(patch, 4, KeyboardInterrupt())
        _stats(real, out)
    for k in (1, 2, 3):
        (real / f"{k}.png").unlink()
    finished = _stats(real, out)
    assert finished.exit_code == 0, finished.output
    assert sorted(_contents(out)) == ["000000.png", "000001.png"]


def test_a_stop_after_the_folder_is_complete_says_how_to_get_the_statistics(real, tmp_path, monkeypatch):
    from fpa_export.fd import realstats

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(realstats, "prepare_real_stats", interrupted)
    out = tmp_path / "out"
    result = _stats(real, out, "-o", str(tmp_path / "s.npz"))
    assert result.exit_code == 130 and "Traceback" not in result.output
    assert f"{out} is complete; for the statistics, rerun with -o and without --write-folder" in result.output
    assert len(_contents(out)) == 5 and not (tmp_path / "s.npz").exists()
