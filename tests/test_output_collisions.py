"""No command writes over its own input, writes two outputs into one file, or adds images to a folder
that holds other images (common.atomic.check_outputs / check_suffix, sampling.imagefiles.stray_images,
fd.realfolder.write_real_folder): each is one line and a non-zero exit, with nothing written."""
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fpa_export.common.atomic import check_outputs, check_suffix, same_file
from fpa_export.common.errors import FpaError
from fpa_export.models import save_checkpoint
from tests.conftest import flat_images, make_generator


def _last_line(result) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    return result.output.strip().splitlines()[-1]


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "ckpt.pt", make_generator())


@pytest.fixture
def real(tmp_path):
    return flat_images(tmp_path / "real", [0, 60, 120], (16, 16, 3))


def test_same_file_sees_links_and_spellings(tmp_path):
    a = tmp_path / "a.pt"
    a.write_bytes(b"x")
    os.link(a, tmp_path / "hard.pt")
    assert same_file(a, tmp_path / "hard.pt")
    assert same_file(a, tmp_path / "." / "a.pt")
    assert same_file(tmp_path / "new.png", tmp_path / "sub" / ".." / "new.png")  # neither exists
    assert not same_file(a, tmp_path / "b.pt")


def test_check_outputs_and_suffix(tmp_path):
    check_outputs({"the animation": tmp_path / "a.gif", "the grid": None}, {"the model": None})
    with pytest.raises(FpaError, match="would overwrite the model"):
        check_outputs({"-o": tmp_path / "m.pt"}, {"the model": tmp_path / "m.pt"})
    with pytest.raises(FpaError, match="name the same file"):
        check_outputs({"the animation": tmp_path / "a.png", "the step grid": tmp_path / "a.png"})
    check_suffix(tmp_path / "G.ONNX", (".onnx",), "graph")  # case does not matter
    with pytest.raises(FpaError, match=r"written as \.onnx"):
        check_suffix(tmp_path / "g.onnx.json", (".onnx",), "graph")


def test_export_never_overwrites_its_checkpoint(checkpoint, tmp_path):
    from fpa_export.cli.export import main

    before = checkpoint.read_bytes()
    for out, fragment in [(checkpoint, "written as .onnx"), (tmp_path / "out.txt", "written as .onnx")]:
        line = _last_line(CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(out)]))
        assert fragment in line, line
    assert checkpoint.read_bytes() == before
    assert _files(tmp_path) == ["ckpt.pt"]


def test_export_refuses_a_graph_over_a_checkpoint_named_onnx(tmp_path):
    from fpa_export.export import ExportError, export_onnx

    odd = save_checkpoint(tmp_path / "weights.onnx", make_generator())  # a checkpoint, oddly named
    before = odd.read_bytes()
    with pytest.raises(ExportError, match="would overwrite the checkpoint"):
        export_onnx(odd, odd, exporter="torchscript")
    assert odd.read_bytes() == before


def test_export_keeps_a_file_that_is_not_a_graph_unless_forced(checkpoint, tmp_path):
    from fpa_export.cli.export import main

    notes = tmp_path / "notes.onnx"
    notes.write_text("my notes, not a graph\n")
    args = ["onnx", str(checkpoint), "-o", str(notes), "--no-verify", "--exporter", "torchscript"]
    line = _last_line(CliRunner().invoke(main, args))
    assert line == (f"Error: {notes}: exists and is not a graph exported by fpa-export, so it is kept; give "
                    "another file name, or pass --force to replace it"), line
    assert notes.read_text() == "my notes, not a graph\n"
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    theirs = tmp_path / "theirs.onnx"  # another tool's graph: not ours to replace either
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), theirs)
    kept = theirs.read_bytes()
    line = _last_line(CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(theirs), "--no-verify"]))
    assert "exists and is not a graph exported by fpa-export" in line and theirs.read_bytes() == kept, line
    their_json = tmp_path / "theirs.onnx.json"  # beside it, a JSON of theirs: not our sidecar either
    their_json.write_text('{"tool": "mine"}\n')
    line = _last_line(CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(theirs), "--no-verify"]))
    assert "exists and is not a graph exported by fpa-export" in line and theirs.read_bytes() == kept, line
    assert their_json.read_text() == '{"tool": "mine"}\n'
    fresh = tmp_path / "fresh.onnx"  # no graph there yet, but a user's JSON where its sidecar goes
    (tmp_path / "fresh.onnx.json").write_text("[1, 2]\n")
    line = _last_line(CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(fresh), "--no-verify"]))
    assert line == (f"Error: {fresh}.json: exists and is not the sidecar of a graph exported by "
                    "fpa-export, so it is kept; give another file name, or pass --force to replace it"), line
    assert not fresh.exists() and (tmp_path / "fresh.onnx.json").read_text() == "[1, 2]\n"
    forced = CliRunner().invoke(main, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    again = CliRunner().invoke(main, args)  # now a graph: re-running replaces or reuses it, no --force
    assert again.exit_code == 0 and "Reused" in again.output, again.output


@pytest.mark.parametrize("where", ["same", "inside", "not-empty"])
def test_real_folder_is_new_or_empty_and_outside_the_images(where, real, tmp_path):
    from fpa_export.cli.sample import main

    target = {"same": real, "inside": real / "copies", "not-empty": tmp_path / "samples"}[where]
    if where == "not-empty":
        target.mkdir()
        (target / "000000.png").write_bytes(b"someone's sample")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["stats", str(real), "--write-folder", str(target)])
    line = _last_line(result)
    assert ("inside the images read" if where != "not-empty" else "holds files already") in line, line
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    assert not (real / "copies").exists()  # the folder it would have created is not left behind


def test_real_folder_into_a_new_folder_still_works(real, tmp_path):
    from fpa_export.cli.sample import main

    result = CliRunner().invoke(main, ["stats", str(real), "--write-folder", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert _files(tmp_path / "r") == ["000000.png", "000001.png", "000002.png"]


@pytest.mark.parametrize("command", ["fd", "stats"])
def test_statistics_are_npz_and_never_over_the_model(command, checkpoint, real):
    from fpa_export.cli.fd import main as fd_main
    from fpa_export.cli.sample import main as sample_main

    before = checkpoint.read_bytes()
    if command == "fd":
        result = CliRunner().invoke(fd_main, [str(real), "--save-stats", str(checkpoint)])
    else:
        result = CliRunner().invoke(sample_main, ["stats", str(real), "-o", str(checkpoint),
                                                  "--model", str(checkpoint)])
    assert "written as .npz" in _last_line(result)
    assert checkpoint.read_bytes() == before


@pytest.mark.parametrize("command", ["fd", "stats"])
def test_statistics_never_replace_other_npz_files_but_replace_their_own(command, checkpoint, real, tmp_path):
    from fpa_export.cli.fd import main as fd_main
    from fpa_export.cli.sample import main as sample_main

    def save(out):
        if command == "fd":
            return CliRunner().invoke(fd_main, [str(real), "--seeds", "0", "--save-stats", str(out)])
        return CliRunner().invoke(sample_main, ["stats", str(real), "-o", str(out), "--seeds", "0",
                                                "--model", str(checkpoint)])

    inception = tmp_path / "inception.npz"
    np.savez(inception, mu=np.zeros(4), sigma=np.eye(4))  # pytorch-fid's statistics
    notes = tmp_path / "notes.npz"
    notes.write_text("not an archive")
    for other in (inception, notes):
        before = other.read_bytes()
        line = _last_line(save(other))
        assert line == (f"Error: {other}: exists and is not statistics written by fpa-fd or fpa-sample stats, "
                        "so it is kept; give another file name, or delete it first"), line
        assert other.read_bytes() == before
    ours = tmp_path / "ours.npz"
    assert save(ours).exit_code == 0 and save(ours).exit_code == 0  # its own statistics: replaced


def test_gif_outputs_must_be_different_files(tmp_path, monkeypatch):
    from fpa_export.cli.gif import main
    from fpa_export.painting import render

    monkeypatch.setattr(render, "paint", lambda *a, **k: pytest.fail("painted before the check"))
    same = tmp_path / "same.png"
    line = _last_line(CliRunner().invoke(main, ["-o", str(same), "--grid", str(same)]))
    assert "name the same file" in line, line
    assert not same.exists()


def test_vis_outputs_never_over_the_source_or_each_other(tmp_path):
    from fpa_export.cli.vis import main

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(photo)
    before = photo.read_bytes()
    line = _last_line(CliRunner().invoke(main, ["invert", str(photo), "-o", str(photo), "--steps", "1"]))
    assert "would overwrite the source image" in line, line
    out = tmp_path / "a.png"
    line = _last_line(CliRunner().invoke(main, ["invert", str(photo), "-o", str(out), "--gif", str(out),
                                                "--steps", "1"]))
    assert "name the same file" in line, line
    assert photo.read_bytes() == before and not out.exists()


@pytest.mark.parametrize("stray, args, earlier", [
    ("img_1.png", [], False),               # someone's image in a new folder
    ("img_1.png", ["--overwrite"], False),  # --overwrite removes samples, never someone's files
    ("000500.png", [], True),               # a sample-like name past --n, beside a finished run
    ("000003.jpg", [], True),               # another format beside a PNG run
    ("sub/000001.png", [], True),           # a subfolder: FID tools read folders recursively
    ("a/b/img.jpg", ["--overwrite"], False),
])
def test_sample_folder_with_other_images_is_refused(stray, args, earlier, tmp_path):
    from fpa_export.cli.sample import main

    outdir = tmp_path / "out"
    outdir.mkdir()
    if earlier:
        assert CliRunner().invoke(main, ["--n", "20", "--outdir", str(outdir)]).exit_code == 0
    (outdir / stray).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(outdir / stray)
    before = {p: p.read_bytes() for p in outdir.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["--n", "20", "--outdir", str(outdir), *args])
    line = _last_line(result)
    assert "not samples 0..19" in line and stray in line, line
    assert {p: p.read_bytes() for p in outdir.rglob("*") if p.is_file()} == before


def test_a_sample_name_past_the_folders_n_is_a_stray_when_extending(tmp_path):
    """A copy of sample 1 named 000009.png in a folder of 4 samples is no sample of any run: --n 12
    would keep it as image 9. It is refused; a folder whose interrupted run planned n 12 is not."""
    from fpa_export.cli.sample import main

    outdir = tmp_path / "out"
    assert CliRunner().invoke(main, ["--n", "4", "--outdir", str(outdir)]).exit_code == 0
    (outdir / "000009.png").write_bytes((outdir / "000001.png").read_bytes())
    before = _files(outdir)
    line = _last_line(CliRunner().invoke(main, ["--n", "12", "--outdir", str(outdir)]))
    assert "not samples 0..3 of its runs" in line and "000009.png" in line, line
    assert _files(outdir) == before
    (outdir / "000009.png").unlink()
    assert CliRunner().invoke(main, ["--n", "12", "--outdir", str(outdir)]).exit_code == 0
    assert CliRunner().invoke(main, ["--n", "16", "--outdir", str(outdir)]).exit_code == 0


def test_real_images_below_a_sample_folder_are_refused_and_counted(real, tmp_path):
    from fpa_export.cli.sample import main

    samples = tmp_path / "samples"
    assert CliRunner().invoke(main, ["--n", "4", "--outdir", str(samples)]).exit_code == 0
    before = {p: p.read_bytes() for p in samples.rglob("*") if p.is_file()}
    result = CliRunner().invoke(main, ["stats", str(real), "--write-folder", str(samples / "real")])
    line = _last_line(result)
    assert f"inside the sample folder {samples}" in line and "write the real images elsewhere" in line, line
    assert {p: p.read_bytes() for p in samples.rglob("*") if p.is_file()} == before
    below = samples / "more"  # 25 images put there by hand: each one counts
    below.mkdir()
    for k in range(25):
        Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(below / f"{k:03d}.png")
    line = _last_line(CliRunner().invoke(main, ["--n", "4", "--outdir", str(samples)]))
    assert "(more/000.png, more/001.png, more/002.png and 22 more)" in line, line


def test_sample_folder_with_notes_is_fine(tmp_path):
    from fpa_export.cli.sample import main

    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "notes.txt").write_text("FID tools read images only")
    result = CliRunner().invoke(main, ["--n", "3", "--outdir", str(outdir)])
    assert result.exit_code == 0, result.output
    assert _files(outdir) == ["000000.png", "000001.png", "000002.png", "notes.txt", "samples.json"]


def test_train_interrupt_says_what_is_kept(tmp_path):
    from fpa_export.training.cli import _interrupted

    assert "nothing to resume" in _interrupted({"out": str(tmp_path)})
    (tmp_path / "latest.pt").write_bytes(b"")
    assert "continue with --resume" in _interrupted({"out": str(tmp_path)})


def test_pictures_and_animations_replace_only_their_own_files_and_stay_out_of_sample_folders(tmp_path):
    from fpa_export.cli.gif import main
    from fpa_export.cli.sample import main as sample_main
    from fpa_export.painting.writers import made_here

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((16, 16), 90, dtype=np.uint8)).save(photo)
    before = photo.read_bytes()
    for option in ("-o", "--grid"):
        line = _last_line(CliRunner().invoke(main, [option, str(photo)]))
        assert line == (f"Error: {photo}: exists and is not a picture or animation written by fpa-export, so "
                        "it is kept; give another file name, or delete it first"), line
        assert photo.read_bytes() == before
    for name in ("a.gif", "a.png", "a.apng", "g.png", "g.jpg"):  # every format carries the mark …
        option = "--grid" if name.startswith("g") else "-o"
        for _ in range(2):  # … so the second run replaces the first's file
            result = CliRunner().invoke(main, [option, str(tmp_path / name)])
            assert result.exit_code == 0, result.output
        assert made_here(tmp_path / name) and not made_here(photo)
    samples = tmp_path / "samples"
    assert CliRunner().invoke(sample_main, ["--n", "2", "--outdir", str(samples), "--backend", "torch"]).exit_code == 0
    first = (samples / "000000.png").read_bytes()
    for out in (samples / "000000.png", samples / "new.gif", samples / "extra" / "deeper" / "g.png"):
        line = _last_line(CliRunner().invoke(main, ["-o", str(out)]))
        assert f"inside the sample folder {samples}" in line, line
    assert (samples / "000000.png").read_bytes() == first and not (samples / "new.gif").exists()
    assert not (samples / "extra").exists()


def test_a_folder_named_as_a_sample_is_said_as_such_in_a_folder_without_a_manifest(tmp_path):
    from fpa_export.cli.sample import main

    (tmp_path / "out" / "000002.png").mkdir(parents=True)
    line = _last_line(CliRunner().invoke(main, ["--n", "5", "--outdir", str(tmp_path / "out")]))
    assert "000002.png: a folder, not a file, where a sample file belongs" in line, line
