"""`fpa-export` command line: a summary line on success, one-line errors on bad input (CliRunner and
one real subprocess), nothing half-written."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("onnxruntime")

from fpa_export.models import save_checkpoint  # noqa: E402
from fpa_export.cli.export import main  # noqa: E402
from tests.conftest import make_generator  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("cli") / "tiny.pt", make_generator(6))


def _one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ")
    for fragment in fragments:
        assert fragment in last, last


def test_onnx_writes_a_verified_graph_then_reuses_it(checkpoint, tmp_path):
    out = tmp_path / "g.onnx"
    args = ["onnx", str(checkpoint), "-o", str(out), "--exporter", "torchscript", "--graph", "steps"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert f"Wrote {out} (max abs diff vs PyTorch: updates" in first.output
    assert Path(str(out) + ".json").is_file()
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 0 and "Reused (unchanged inputs)" in second.output


def test_default_model_and_default_output_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["onnx", "--exporter", "torchscript", "--uint8"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "default_model-image-uint8.onnx").is_file()
    assert "uint8 level(s)" in result.output


def test_bad_inputs_are_one_line_errors(checkpoint, tmp_path):
    runner = CliRunner()
    _one_line_error(runner.invoke(main, ["onnx", str(tmp_path / "missing.pt")]), "does not exist")
    _one_line_error(runner.invoke(main, ["onnx", str(tmp_path)]), "is a directory")
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    _one_line_error(runner.invoke(main, ["onnx", str(text)]), str(text))
    _one_line_error(runner.invoke(main, ["onnx", str(checkpoint), "-o", str(text / "g.onnx")]),
                    "is not a directory")
    _one_line_error(runner.invoke(main, ["onnx", str(checkpoint), "-o", str(tmp_path)]),
                    "is a directory")
    _one_line_error(runner.invoke(main, ["onnx", str(checkpoint), "--graph", "steps", "--uint8"]),
                    "uint8")


def test_unwritable_output_folder(checkpoint, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        result = CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(locked / "g.onnx")])
        _one_line_error(result, "cannot write")
    finally:
        locked.chmod(0o700)


def test_help_shows_examples():
    for command in (["--help"], ["onnx", "--help"], ["trt", "--help"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0 and "Examples:" in result.output


def test_real_subprocess_error_is_one_line(tmp_path):
    script = Path(sys.executable).with_name("fpa-export")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "fpa_export.cli.export"]
    text = tmp_path / "junk.pt"
    text.write_bytes(b"\x00garbage")
    done = subprocess.run(command + ["onnx", str(text)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and str(text) in lines[-1]


def test_progress_is_one_plain_line_per_stage_off_a_terminal(checkpoint, tmp_path):
    out = tmp_path / "p.onnx"
    done = CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(out), "--exporter", "torchscript"])
    assert done.exit_code == 0, done.output
    assert "\r" not in done.output
    stages = [line for line in done.output.splitlines() if line.startswith("export: ")]
    assert [line.split(" [")[0] for line in stages] == [
        "export: tracing with torchscript", "export: onnx.checker", "export: onnxruntime vs PyTorch",
        "export: writing"]


def test_rgb_and_atol_options(checkpoint, tmp_path):
    out = tmp_path / "rgb.onnx"
    done = CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(out), "--rgb", "--uint8",
                                     "--atol", "1e-3"])
    assert done.exit_code == 0, done.output
    record = __import__("json").loads(Path(str(out) + ".json").read_text())
    assert record["inputs"]["spec"]["rgb"] and record["inputs"]["atol"] == 1e-3
    assert record["inputs"]["exporter"] == "torchscript"  # the default on this torch: seconds
    _one_line_error(CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(tmp_path / "s.onnx"),
                                              "--atol", "1e-12"]), "tolerance 1e-12")
    assert not (tmp_path / "s.onnx").exists()
    _one_line_error(CliRunner().invoke(main, ["onnx", str(checkpoint), "--graph", "steps", "--rgb"]),
                    "rgb")


@pytest.mark.parametrize("atol", ["nan", "inf"])
def test_a_meaningless_atol_is_refused_before_the_export(checkpoint, tmp_path, monkeypatch, atol):
    from fpa_export.export import onnx_export

    monkeypatch.setattr(onnx_export, "sweep_stale_temporaries", lambda *a: (_ for _ in ()).throw(
        AssertionError("export work began before --atol was checked")))
    _one_line_error(CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(tmp_path / "x.onnx"),
                                              "--atol", atol]), "--atol must be a non-negative finite")
    assert list(tmp_path.iterdir()) == []


def test_garbage_onnx_given_to_trt_is_one_line(tmp_path, monkeypatch):
    import sys

    from tests.test_export_trt import fake_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    monkeypatch.setattr("fpa_export.export.trt_build._gpu_name", lambda: "Fake GPU")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(1000))
    Path(str(junk) + ".json").write_text("[" * 50_000)
    _one_line_error(CliRunner().invoke(main, ["trt", str(junk)]), "not a graph from `fpa-export onnx`")
