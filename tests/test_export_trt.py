"""TensorRT engine building, exercised with a fake `tensorrt` module (TensorRT cannot be installed on
the CI machines). What this checks: the calls we make (strongly typed network per version, the batch
profile, TF32 off, workspace, timing cache), the sidecar, reuse, error paths and the CLI. What it cannot
check: that real TensorRT accepts the graph — the `gpu` test at the end does that on a GPU machine.
"""
from __future__ import annotations

import importlib.machinery
import sys
from pathlib import Path
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("onnxruntime")

from fpa_export.models import save_checkpoint  # noqa: E402
from fpa_export.cli.export import main  # noqa: E402
from fpa_export.export import ExportError, build_engine, export_onnx, read_sidecar  # noqa: E402
from fpa_export.export.trt_build import batch_profile, network_flags  # noqa: E402
from tests.conftest import make_generator  # noqa: E402


def fake_tensorrt(version: str = "10.9.0", parse_ok: bool = True, build_ok: bool = True):
    """A stand-in with the slice of the TensorRT Python API that trt_build uses; records calls."""
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)  # torch.export probes for it
    trt.__version__ = version
    trt.calls = calls = {}

    class Logger:
        WARNING = 2

        def __init__(self, level):
            calls["logger"] = level

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            calls["parsed"] = path
            return parse_ok

        def get_error(self, index):
            return "In node 3 (Foo): unsupported operator"

    class Cache:
        def __init__(self, blob):
            self.blob = blob

        def serialize(self):
            return b"cache+" + self.blob

    class Profile:
        def set_shape(self, name, low, opt, high):
            calls.setdefault("profile", {})[name] = (low, opt, high)

    class Config:
        def set_memory_pool_limit(self, pool, size):
            calls["workspace"] = (pool, size)

        def clear_flag(self, flag):
            calls.setdefault("cleared", []).append(flag)

        def add_optimization_profile(self, profile):
            calls["profiles_added"] = calls.get("profiles_added", 0) + 1

        def create_timing_cache(self, blob):
            calls["cache_in"] = bytes(blob)
            self.cache = Cache(bytes(blob))
            return self.cache

        def set_timing_cache(self, cache, ignore_mismatch):
            calls["ignore_mismatch"] = ignore_mismatch
            return not cache.blob.startswith(b"foreign")  # TensorRT refuses another GPU's cache

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls["builds"] = calls.get("builds", 0) + 1
            return bytearray(b"PLAN") if build_ok else None

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, Parser
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=3)
    trt.BuilderFlag = types.SimpleNamespace(TF32="TF32")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    return trt


def onnxruntime_engine(perturb=None):
    """A stand-in for running the built engine: onnxruntime on the graph the fake TensorRT parsed,
    optionally perturbed (`perturb(outputs) -> outputs`) to play a wrong engine."""
    def run(plan, spec, z):
        import onnxruntime

        path = sys.modules["tensorrt"].calls["parsed"]
        outputs = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
            spec.output_names, {"z": z})
        return perturb(outputs) if perturb else outputs
    return run


@pytest.fixture(autouse=True)
def a_gpu(monkeypatch):
    """The builder needs a GPU; these tests pretend there is one (the fake TensorRT needs none), and
    the engine check runs the graph in onnxruntime in place of the engine."""
    monkeypatch.setattr("fpa_export.export.trt_build._gpu_name", lambda: "Fake GPU")
    monkeypatch.setattr("fpa_export.export.trt_verify.run_plan", onnxruntime_engine())


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("trt")
    checkpoint = save_checkpoint(folder / "m.pt", make_generator(4))
    return export_onnx(checkpoint, folder / "m.onnx", exporter="torchscript").path


def test_build_with_tensorrt_10(monkeypatch, onnx_file, tmp_path):
    trt = fake_tensorrt("10.9.0")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    cache = tmp_path / "timing.cache"
    result = build_engine(onnx_file, tmp_path / "m.plan", min_batch=2, opt_batch=4, max_batch=16,
                          timing_cache=cache, workspace_gb=0.5)
    assert result.path.read_bytes() == b"PLAN" and not result.reused
    assert trt.calls["network_flags"] == 1 << 3  # STRONGLY_TYPED
    assert trt.calls["profile"] == {"z": ((2, 8), (4, 8), (16, 8))}
    assert trt.calls["cleared"] == ["TF32"] and trt.calls["workspace"] == ("WORKSPACE", 1 << 29)
    assert trt.calls["parsed"] == str(onnx_file) and trt.calls["cache_in"] == b""
    assert cache.read_bytes() == b"cache+"
    sidecar = read_sidecar(result.path)
    assert sidecar["inputs"]["tensorrt"] == "10.9.0" and sidecar["inputs"]["profile"]["max"] == 16
    assert sidecar["config"]["image_size"] == 8 and "gpu" in sidecar["inputs"]
    # the engine names its source checkpoint itself, so its identity does not depend on where the
    # .onnx is later (or on the working directory)
    assert sidecar["inputs"]["checkpoint_sha256"] == read_sidecar(onnx_file)["inputs"]["checkpoint_sha256"]
    assert Path(sidecar["onnx"]).is_absolute()

    again = build_engine(onnx_file, tmp_path / "m.plan", min_batch=2, opt_batch=4, max_batch=16,
                         timing_cache=cache, workspace_gb=0.5)
    assert again.reused and trt.calls["builds"] == 1
    build_engine(onnx_file, tmp_path / "m.plan", min_batch=2, opt_batch=4, max_batch=16,
                 timing_cache=cache, workspace_gb=0.5, force=True)
    assert trt.calls["cache_in"] == b"cache+"  # the saved timing cache is read back


def test_tensorrt_11_is_always_strongly_typed_and_tf32_can_stay(monkeypatch, onnx_file, tmp_path):
    trt = fake_tensorrt("11.4.1")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    build_engine(onnx_file, tmp_path / "e.plan", tf32=True)
    assert trt.calls["network_flags"] == 0 and "cleared" not in trt.calls
    assert network_flags(fake_tensorrt("10.0.1")) == 8


def test_build_from_checkpoint_exports_first(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    checkpoint = save_checkpoint(tmp_path / "c.pt", make_generator(5))
    monkeypatch.chdir(tmp_path)
    result = build_engine(checkpoint, tmp_path / "out" / "c.plan", graph="steps", max_batch=8,
                          exporter="torchscript")
    assert result.onnx == tmp_path / "out" / "c.onnx" and result.onnx.is_file()
    assert read_sidecar(result.path)["inputs"]["spec"]["graph"] == "steps"


@pytest.mark.parametrize("kwargs, message", [
    (dict(parse_ok=False), "cannot parse .*unsupported operator"),
    (dict(build_ok=False), "failed to build"),
])
def test_tensorrt_failures_are_one_line_errors(monkeypatch, onnx_file, tmp_path, kwargs, message):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(**kwargs))
    with pytest.raises(ExportError, match=message):
        build_engine(onnx_file, tmp_path / "x.plan")
    assert not (tmp_path / "x.plan").exists()


def test_batch_profile_defaults_and_validation():
    assert batch_profile() == batch_profile(1, 256, 1024)
    assert batch_profile(max_batch=64).opt == 64 and batch_profile(300, None, 1000).opt == 300
    for bad in [(4, 2, 8), (1, 9, 8)]:
        with pytest.raises(ExportError, match="min ≤ opt ≤ max"):
            batch_profile(*bad)
    for bad in [(0, None, 4), (8, None, 2)]:  # opt not given: the message names only what was
        with pytest.raises(ExportError, match=f"--min-batch ≤ --max-batch, got {bad[0]} and {bad[2]}$"):
            batch_profile(*bad)


def test_cli_without_tensorrt_and_with_bad_profile(monkeypatch, onnx_file):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    result = CliRunner().invoke(main, ["trt", str(onnx_file)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: TensorRT is not installed")
    assert "fpa-export[trt]" in result.output

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    result = CliRunner().invoke(main, ["trt", str(onnx_file), "--min-batch", "8", "--max-batch", "4"])
    assert result.exit_code == 1 and "--min-batch ≤ --max-batch, got 8 and 4" in result.output.strip().splitlines()[-1]


def test_cli_builds_with_fake_tensorrt(monkeypatch, onnx_file, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.3.0"))
    out = tmp_path / "cli.plan"
    result = CliRunner().invoke(main, ["trt", str(onnx_file), "-o", str(out), "--max-batch", "32"])
    assert result.exit_code == 0, result.output
    assert f"Wrote {out} (TensorRT 10.3.0" in result.output and out.is_file()


def test_engine_from_another_tensorrt_version_is_refused(monkeypatch, onnx_file, tmp_path):
    from fpa_export.runtime.trt_backend import TrtSampler

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.3.0"))
    plan = build_engine(onnx_file, tmp_path / "v.plan").path
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("11.0.0"))
    with pytest.raises(ExportError, match="built with TensorRT 10.3.0"):
        TrtSampler(plan)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_tensorrt_engine_matches_eager(onnx_file, tmp_path):
    pytest.importorskip("tensorrt")
    from fpa_export.runtime import make_sampler
    from fpa_export.loading import load_generator

    plan = build_engine(onnx_file, tmp_path / "real.plan", max_batch=16).path
    sampler = make_sampler(str(plan), backend="trt", device="cuda")
    generator = load_generator(onnx_file.with_suffix(".pt"))
    z = torch.randn(7, sampler.latent_size)
    torch.testing.assert_close(sampler(z), generator(z).detach(), rtol=0, atol=1e-4)


def test_no_gpu_foreign_timing_cache_and_onnx_output_path(monkeypatch, onnx_file, tmp_path):
    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr("fpa_export.export.trt_build._gpu_name", lambda: None)
    with pytest.raises(ExportError, match="needs an NVIDIA GPU"):
        build_engine(onnx_file, tmp_path / "m.plan")
    monkeypatch.setattr("fpa_export.export.trt_build._gpu_name", lambda: "Fake GPU")
    with pytest.raises(ExportError, match="written as .plan"):
        build_engine(onnx_file, onnx_file)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"foreign-gpu")
    with pytest.warns(UserWarning, match="timing cache"):
        result = build_engine(onnx_file, tmp_path / "m.plan", timing_cache=cache)
    assert result.path.read_bytes() == b"PLAN"
    assert cache.read_bytes() == b"cache+"  # rebuilt from an empty cache, the foreign one replaced


@pytest.mark.parametrize("perturb, message", [
    (lambda outs: [out + 1e-2 for out in outs], "TensorRT differs from onnxruntime by 0.01"),
    (lambda outs: [np.full_like(out, np.nan) for out in outs], "TensorRT differs from onnxruntime by nan"),
])
def test_an_engine_beyond_tolerance_is_refused_and_not_written(monkeypatch, onnx_file, tmp_path,
                                                               perturb, message):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    monkeypatch.setattr("fpa_export.export.trt_verify.run_plan", onnxruntime_engine(perturb))
    with pytest.raises(ExportError, match=message):
        build_engine(onnx_file, tmp_path / "bad.plan")
    assert not (tmp_path / "bad.plan").exists() and not (tmp_path / "bad.plan.json").exists()


def test_engine_check_is_recorded_and_tf32_widens_it(monkeypatch, onnx_file, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    result = build_engine(onnx_file, tmp_path / "ok.plan", min_batch=1, max_batch=4)
    report = read_sidecar(result.path)["results"]["verification"]
    assert report["image"]["max_abs_diff"] == 0.0 and result.report == report
    slightly_off = onnxruntime_engine(lambda outs: [out + 5e-3 for out in outs])
    monkeypatch.setattr("fpa_export.export.trt_verify.run_plan", slightly_off)
    with pytest.raises(ExportError, match="tolerance 0.0001"):
        build_engine(onnx_file, tmp_path / "f32.plan")
    assert build_engine(onnx_file, tmp_path / "tf32.plan", tf32=True).path.is_file()
    unchecked = build_engine(onnx_file, tmp_path / "nv.plan", verify=False, force=True)
    assert read_sidecar(unchecked.path)["results"]["verified"] is False


def test_probe_batch_stays_inside_the_profile():
    from fpa_export.export.trt_verify import probe_batch

    assert probe_batch(1, 1024) == 7 and probe_batch(1, 4) == 4 and probe_batch(16, 64) == 16


def test_bad_profile_is_reported_before_the_tensorrt_check(monkeypatch, onnx_file):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no TensorRT at all
    result = CliRunner().invoke(main, ["trt", str(onnx_file), "--min-batch", "8", "--max-batch", "4"])
    assert result.exit_code == 1 and "--min-batch ≤ --max-batch, got 8 and 4" in result.output.strip().splitlines()[-1]


def test_an_onnx_without_sidecar_builds_from_its_own_record(monkeypatch, onnx_file, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt())
    alone = tmp_path / "alone.onnx"
    alone.write_bytes(onnx_file.read_bytes())
    result = build_engine(alone, tmp_path / "alone.plan")
    assert read_sidecar(result.path)["inputs"]["spec"]["graph"] == "image"
