"""Lean start: a command imports only what its path needs (checked in fresh processes)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "onnx", "onnxscript", "torch.onnx", "onnxruntime", "numpy")
NEVER_IN_SAMPLING = ("onnx", "onnxscript", "torch.onnx", "fpa_export.training", "fpa_export.vis")

PROBE = """
import json, sys
from fpa_export.cli.{command} import main
try:
    main({args!r}, prog_name="x")
except SystemExit as exit:
    code = exit.code
print(json.dumps({{"code": code, "modules": sorted(sys.modules)}}))
"""


def _imports(command: str, args: list[str], cwd, env=None) -> tuple[int, set[str]]:
    result = subprocess.run([sys.executable, "-c", PROBE.format(command=command, args=args)],
                            cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report["code"], set(report["modules"])


def _prefixed(modules: set[str], names) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


@pytest.mark.parametrize("command", ["sample", "gif", "fd"])
def test_help_imports_neither_torch_nor_onnx(command, tmp_path):
    code, modules = _imports(command, ["--help"], tmp_path)
    assert code == 0
    assert _prefixed(modules, HEAVY) == []


def test_sampling_an_exported_graph_does_not_import_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from fpa_export.export import export_onnx

    graph = export_onnx(None, tmp_path / "g.onnx", exporter="torchscript").path
    code, modules = _imports("sample", [str(graph), "--n", "3", "--outdir", str(tmp_path / "s")],
                             tmp_path)
    assert code == 0 and (tmp_path / "s" / "000002.png").exists()
    assert "onnxruntime" in modules  # it did run the graph
    assert _prefixed(modules, NEVER_IN_SAMPLING) == []


def test_sampling_a_checkpoint_with_torch_imports_no_training_or_vis(tmp_path):
    code, modules = _imports("sample", ["--n", "2", "--outdir", str(tmp_path / "s"),
                                        "--backend", "torch"], tmp_path)
    assert code == 0 and (tmp_path / "s" / "000001.png").exists()
    assert _prefixed(modules, NEVER_IN_SAMPLING + ("onnxruntime",)) == []


def _torch_free_latents() -> bool:
    from fpa_export.sampling import randn

    return randn.exact_here()


@pytest.mark.skipif(not _torch_free_latents(), reason="latents need torch off x86-64 AVX2/FMA")
def test_a_cached_checkpoint_samples_without_torch_and_writes_the_same_files(tmp_path):
    """With the export cache filled, sampling the default model imports neither torch nor onnx, and
    writes byte-identical files and manifest to a run that used torch (the torch backend's latents)."""
    pytest.importorskip("onnxruntime")
    env = {**__import__("os").environ, "FPA_EXPORT_CACHE": str(tmp_path / "cache")}
    first = tmp_path / "first"
    code, modules = _imports("sample", ["--n", "40", "--outdir", str(first)], tmp_path, env)
    assert code == 0 and "torch" in modules  # the first use exports the graph
    second = tmp_path / "second"
    code, modules = _imports("sample", ["--n", "40", "--outdir", str(second)], tmp_path, env)
    assert code == 0 and "onnxruntime" in modules
    assert _prefixed(modules, ("torch", "onnx", "fpa_export.training", "fpa_export.vis")) == []
    for i in range(40):
        name = f"{i:06d}.png"
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    manifest = json.loads((second / "samples.json").read_text())
    assert manifest == json.loads((first / "samples.json").read_text())
    assert manifest["versions"]["torch"]  # read from torch's metadata, not by importing it
