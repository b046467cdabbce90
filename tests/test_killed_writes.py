"""What a kill -9 or a Ctrl-C inside a library leaves: temporaries of a killed write are removed by the
next write of the same file, and an interrupt that a library wraps in its own error is an interrupt."""
import os
import time

import pytest
from click.testing import CliRunner

from fpa_export.common.atomic import STALE_AFTER_S, check_writable


def _plant(folder, target, age_s, random="ab12CD34"):
    path = folder / f".{target}.{random}.tmp"
    path.write_bytes(b"half a file")
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_checking_an_output_removes_only_its_own_killed_writes(tmp_path):
    out = tmp_path / "paint.gif"
    stale = _plant(tmp_path, out.name, STALE_AFTER_S + 60)
    live = _plant(tmp_path, out.name, 5, "zz98yx76")  # a concurrent writer of the same file, still at work
    other = _plant(tmp_path, "other.gif", STALE_AFTER_S + 60)  # another file's: not this command's
    near = _plant(tmp_path, "paint.gif.bak", STALE_AFTER_S + 60)  # a longer name that begins alike
    check_writable(out)
    assert not stale.exists()
    assert live.exists() and other.exists() and near.exists()


def test_a_rerun_of_gif_after_a_kill_leaves_no_temporary(tmp_path):
    from fpa_export.cli.gif import main

    out = tmp_path / "paint.gif"
    stale = _plant(tmp_path, out.name, 2 * 24 * 3600)
    done = CliRunner().invoke(main, ["-o", str(out), "--seeds", "0-1"])
    assert done.exit_code == 0, done.output
    assert out.is_file() and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["paint.gif"]


def test_ctrl_c_inside_an_extensions_import_is_an_interrupt_not_a_missing_package(monkeypatch):
    import importlib

    from fpa_export.common.optional import require

    def interrupted_import(name, *args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ImportError("initialization failed")  # what a C extension's init makes of it

    monkeypatch.setattr(importlib, "import_module", interrupted_import)
    with pytest.raises(KeyboardInterrupt):
        require("onnxruntime")


def test_ctrl_c_inside_the_exporter_is_an_interrupt_not_an_export_failure(monkeypatch):
    import torch

    from fpa_export.export import onnx_export
    from fpa_export.export.spec import ExportSpec
    from fpa_export.loading import load_generator

    def interrupted(*args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as err:
            raise torch.onnx.errors.OnnxExporterError("Failed to decompose the FX graph") from err

    monkeypatch.setattr(onnx_export, "_trace_dynamo", interrupted)
    generator = load_generator()
    with pytest.raises(KeyboardInterrupt):
        onnx_export.trace(generator, ExportSpec(config=generator.config), exporter="dynamo")
    monkeypatch.setattr(onnx_export, "_trace_dynamo", lambda *a: (_ for _ in ()).throw(
        torch.onnx.errors.OnnxExporterError("a real failure\nNext steps:")))
    with pytest.raises(onnx_export.ExportError, match="the dynamo exporter failed: a real failure"):
        onnx_export.trace(generator, ExportSpec(config=generator.config), exporter="dynamo")
