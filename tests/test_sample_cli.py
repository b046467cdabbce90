"""`fpa-sample` and `fpa-sample stats` through CliRunner and as real processes."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fpa_export.models import save_checkpoint
from fpa_export.cli.sample import main
from fpa_export.sampling.imagefiles import decode
from tests.conftest import make_generator

FPA_SAMPLE = str(Path(sys.executable).parent / "fpa-sample")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return str(save_checkpoint(tmp_path_factory.mktemp("cli") / "grey.pt", make_generator(5, channels=1)))


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(0)
    for k in range(12):
        Image.fromarray(rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(folder / f"{k}.png")
    return folder


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _one_line_error(result, text):
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and text in errors[0], result.output


def test_model_argument_and_default_model(checkpoint, tmp_path):
    result = _invoke(checkpoint, "--n", 10, "--outdir", tmp_path / "a", "--backend", "torch")
    assert result.exit_code == 0, result.output
    assert "Wrote 10 images" in result.output and str(tmp_path / "a") in result.output
    assert len(list((tmp_path / "a").glob("*.png"))) == 10
    result = _invoke("--n", 3, "--outdir", tmp_path / "b", "--backend", "torch", "--format", "jpg")
    assert result.exit_code == 0, result.output
    assert decode(tmp_path / "b" / "000002.jpg").shape == (32, 32)  # the embedded model: 32 px grey
    spelt = _invoke("--n", 4, "--outdir", tmp_path / "b", "--backend", "torch", "--format", "JPEG")
    assert spelt.exit_code == 0 and "(3 already there)" in spelt.output, spelt.output  # the same folder
    assert sorted(p.name for p in (tmp_path / "b").glob("*.jp*g")) == [f"00000{i}.jpg" for i in range(4)]


def test_user_errors_are_one_line(checkpoint, tmp_path):
    folder = tmp_path / "x"
    assert _invoke(checkpoint, "--n", 4, "--outdir", folder, "--backend", "torch").exit_code == 0
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    _one_line_error(_invoke(checkpoint, "--n", 0, "--outdir", folder), "at least 1")
    _one_line_error(_invoke(checkpoint, "--n", -2, "--outdir", folder), "at least 1")
    _one_line_error(_invoke(checkpoint, "--n", 4, "--outdir", folder, "--seed", 9), "different seed")
    _one_line_error(_invoke(checkpoint, "--n", 4), "--outdir")
    _one_line_error(_invoke(checkpoint, "--n", 4, "--no-save"), "--reference-stats")
    _one_line_error(_invoke(checkpoint, "--n", 4, "--outdir", folder, "--shard", "2/2"), "--shard")
    _one_line_error(_invoke(tmp_path / "missing.pt", "--n", 4, "--outdir", folder), "does not exist")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_full_disk_is_one_line_and_keeps_earlier_files(checkpoint, tmp_path, monkeypatch):
    from fpa_export.sampling import imagefiles

    calls = []

    class FullDisk:  # the os module as the sample writer sees it, with a disk that fills up
        def __getattr__(self, name):
            return getattr(os, name)

        def write(self, fd, data):
            calls.append(fd)
            if len(calls) > 5:
                raise OSError(errno.ENOSPC, "No space left on device")  # os.write names no file
            return os.write(fd, data)

    monkeypatch.setattr(imagefiles, "os", FullDisk())
    result = _invoke(checkpoint, "--n", 12, "--outdir", tmp_path / "f", "--backend", "torch",
                     "--batch-size", 5, "--workers", 1)
    _one_line_error(result, f"No space left on device ({tmp_path / 'f' / '000005.png'})")
    files = sorted((tmp_path / "f").glob("*.png"))
    assert len(files) == 5 and all(decode(p).shape == (8, 8) for p in files)


def test_stats_then_reference_stats(checkpoint, real_dir, tmp_path):
    stats = tmp_path / "real.npz"
    result = _invoke("stats", real_dir, "-o", stats, "--model", checkpoint, "--seeds", 1)
    assert result.exit_code == 0, result.output
    assert "12 real images" in result.output and stats.exists()
    result = _invoke(checkpoint, "--n", 6, "--outdir", tmp_path / "s", "--backend", "torch",
                     "--reference-stats", stats)
    assert result.exit_code == 0, result.output
    assert "Wrote 6 images" in result.output and "FD = " in result.output
    saved = result.output.split("FD = ")[1].split()[0]
    result = _invoke(checkpoint, "--n", 6, "--no-save", "--backend", "torch", "--reference-stats", stats)
    assert result.exit_code == 0, result.output
    assert result.output.split("FD = ")[1].split()[0] == saved  # same images, scored in memory
    _one_line_error(_invoke(checkpoint, "--n", 6, "--no-save", "--format", "jpg",
                            "--reference-stats", stats), "prepared for")
    _one_line_error(_invoke("stats", tmp_path / "s", "-o", tmp_path / "bad.npz", "--model",
                            tmp_path / "nope.pt"), "does not exist")


def test_real_process_errors_and_kill_9(checkpoint, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([FPA_SAMPLE, checkpoint, "--n", "0", "--outdir", str(tmp_path / "z")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and done.stderr.strip().startswith("Error:")
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "z").exists()

    folder = tmp_path / "killed"
    process = subprocess.Popen([FPA_SAMPLE, checkpoint, "--n", "200000", "--outdir", str(folder),
                                "--backend", "torch", "--batch-size", "16"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 90
        while len(list(folder.glob("*.png"))) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    files = list(folder.glob("*.png"))
    assert len(files) >= 40
    assert all(decode(path).shape == (8, 8) for path in files)  # whole files only
    assert len(list(folder.glob(".*.tmp"))) <= 16  # at most the batch in flight


def test_prints_what_it_chose_in_one_line(checkpoint, tmp_path):
    result = CliRunner().invoke(main, [checkpoint, "--n", "3", "--outdir", str(tmp_path / "c"),
                                       "--backend", "torch", "--threads", "1", "--workers", "2"])
    assert result.exit_code == 0, result.output
    chosen = [line for line in result.output.splitlines() if line.startswith("Using ")]
    assert chosen == ["Using torch-cpu, fp32, 1 painting + 2 writing threads, PNG compress level 0"]  # 8×8 images: stored
    result = CliRunner().invoke(main, [checkpoint, "--n", "3", "--outdir", str(tmp_path / "j"),
                                       "--backend", "torch", "--threads", "1", "--workers", "2",
                                       "--format", "jpg", "--jpeg-quality", "80"])
    chosen = [line for line in result.output.splitlines() if line.startswith("Using ")]
    assert chosen == ["Using torch-cpu, fp32, 1 painting + 2 writing threads, JPEG quality 80"]


def test_a_graph_with_another_backend_is_one_short_line(checkpoint, tmp_path):
    from fpa_export.export import export_onnx

    graph = export_onnx(checkpoint, tmp_path / "g.onnx", exporter="torchscript").path
    result = CliRunner().invoke(main, [str(graph), "--n", "3", "--outdir", str(tmp_path / "o"),
                                       "--backend", "torch"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == f"Error: {graph}: a .onnx file runs only with backend='onnx'"
    assert not (tmp_path / "o").exists()


def test_stats_writes_the_paper_real_folder_for_fid_tools(tmp_path):
    """`fpa-sample stats --write-folder`: real images through the training transform and the fakes'
    JPEG round trip (quality 75), as a folder an FID tool reads."""
    import io

    import numpy as np
    from PIL import Image

    from fpa_export.cli.sample import main as sample_main
    from fpa_export.common.images import load_image_array

    real = tmp_path / "real"
    real.mkdir()
    rng = np.random.default_rng(0)
    for k, shape in enumerate([(40, 50, 3), (64, 33, 3)]):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(real / f"{k}.png")
    out = tmp_path / "real32"
    result = CliRunner().invoke(sample_main, ["stats", str(real), "--write-folder", str(out),
                                              "--format", "jpg", "--jpeg-quality", "75"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert files == ["000000.jpg", "000001.jpg"]
    for k in range(2):
        expected = io.BytesIO()  # Pillow's JPEG at quality 75, as the official save_image wrote it
        Image.fromarray(load_image_array(real / f"{k}.png", 32, 1)).save(expected, "JPEG", quality=75)
        assert (out / f"{k:06d}.jpg").read_bytes() == expected.getvalue()
    refused = CliRunner().invoke(sample_main, ["stats", str(real)])
    assert refused.exit_code != 0 and "--write-folder" in refused.output


def test_reference_stats_are_checked_before_any_image_is_written(checkpoint, real_dir, tmp_path):
    from fpa_export.fd import metric

    other = tmp_path / "other.npz"  # real statistics of 16-px images, not this model's 8-px ones
    big = save_checkpoint(tmp_path / "big.pt", make_generator(5, channels=1, image_size=16))
    assert _invoke("stats", real_dir, "-o", other, "--model", big, "--seeds", 1).exit_code == 0
    plain = tmp_path / "plain.npz"  # features without a pipeline record
    metric.save_stats(plain, metric.compute_stats([metric.torch.rand(4, 3, 32, 32)], seeds=[0],
                                                  resolution=32, source="x"))
    text = tmp_path / "text.npz"
    text.write_text("not statistics\n")
    cut = tmp_path / "cut.npz"
    cut.write_bytes(other.read_bytes()[:200])
    own = tmp_path / "own.npz"  # this model's: edited below
    assert _invoke("stats", real_dir, "-o", own, "--model", checkpoint, "--seeds", 1).exit_code == 0
    edited = {}
    for key, value, message in (("pipeline_jpeg_quality", 75, "png q75 images, these samples are 8 px, "
                                 "1 channel(s), png;"),
                                ("pipeline_size", np.asarray([8]), "its pipeline_size is [8]"),
                                ("pipeline_format", np.asarray(["png", "jpg"]), "its pipeline_format is")):
        with np.load(own) as data:
            arrays = {k: data[k] for k in data.files}
        arrays[key] = np.asarray(value)
        edited[tmp_path / f"{key}.npz"] = message
        np.savez(tmp_path / f"{key}.npz", **arrays)
    for stats, message in ((other, "prepared for 16 px"), (plain, "no pipeline record"),
                           (text, "not a statistics file"), (cut, "a damaged statistics file"),
                           *edited.items()):
        folder = tmp_path / f"s-{stats.stem}"
        _one_line_error(_invoke(checkpoint, "--n", 6, "--outdir", folder, "--backend", "torch",
                                "--reference-stats", stats), message)
        assert not folder.exists(), stats


def test_the_run_is_announced_before_the_progress_bar_is_drawn(checkpoint, tmp_path, monkeypatch):
    import tqdm as tqdm_module
    from fpa_export.sampling import SampleRun, sample_folder

    events = []
    real_bar = tqdm_module.tqdm

    def bar(*args, **kwargs):
        events.append("bar")
        return real_bar(*args, **kwargs)

    monkeypatch.setattr(tqdm_module, "tqdm", bar)
    sample_folder(SampleRun(tmp_path / "a", n=5, batch_size=2), model=checkpoint, backend="torch",
                  on_start=lambda choice: events.append("announced"))
    assert events == ["announced", "bar"]


def test_the_embedded_model_is_called_default_in_every_command(tmp_path):
    from fpa_export.cli.export import main as export_main
    from fpa_export.cli.gif import main as gif_main

    result = _invoke("default", "--n", 2, "--outdir", tmp_path / "s", "--backend", "torch")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "s" / "samples.json").read_text())["model"]["path"] == "default"
    result = CliRunner().invoke(gif_main, ["default", "-o", str(tmp_path / "a.gif")])
    assert result.exit_code == 0 and (tmp_path / "a.gif").is_file(), result.output
    result = CliRunner().invoke(export_main, ["onnx", "default", "-o", str(tmp_path / "d.onnx"), "--no-verify",
                                              "--exporter", "torchscript"])
    assert result.exit_code == 0 and (tmp_path / "d.onnx").is_file(), result.output
    real = tmp_path / "real"
    real.mkdir()
    for k in range(2):
        Image.fromarray(np.full((8, 8), 40 * k, np.uint8)).save(real / f"{k}.png")
    result = CliRunner().invoke(main, ["stats", str(real), "-o", str(tmp_path / "r.npz"), "--model", "default",
                                       "--seeds", "0"])
    assert result.exit_code == 0, result.output
    result = _invoke("defualt", "--n", 2, "--outdir", tmp_path / "t")  # a typo is still a missing file
    assert result.exit_code == 2 and "'defualt' does not exist" in result.output


def test_verify_applies_only_when_a_folder_of_samples_is_resumed(tmp_path):
    for args in ([], ["--overwrite"]):
        result = _invoke("--n", 2, "--outdir", tmp_path / "fresh", "--verify", *args)
        assert result.exit_code == 2 and "--verify applies only when a folder of samples is resumed" \
            in result.output, result.output
        assert not (tmp_path / "fresh").exists()
    assert _invoke("--n", 2, "--outdir", tmp_path / "s", "--backend", "torch").exit_code == 0
    result = _invoke("--n", 3, "--outdir", tmp_path / "s", "--backend", "torch", "--verify")
    assert result.exit_code == 0 and "(2 already there)" in result.output, result.output
