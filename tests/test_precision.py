"""--precision fp32|bf16|fp16: where each runs, what stays fp32, the probe, and what a folder records.

This CPU may lack bf16 instructions; tests that need bf16 to be "supported" patch the capability
query (`runtime.precision.cpu_bf16_flags`) — torch still computes bf16 correctly, only slower.
"""
from __future__ import annotations

import copy
import pathlib

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import fpa_export.models.fpa as fpa_module
from fpa_export.cli.sample import main as sample_main
from fpa_export.models import save_checkpoint
from fpa_export.runtime import make_sampler
from fpa_export.runtime import precision as P
from fpa_export.runtime.precision import PrecisionError
from fpa_export.sampling import FolderMismatch, SampleRun, sample_folder
from tests.conftest import make_generator


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    generator = make_generator(5)
    return save_checkpoint(tmp_path_factory.mktemp("precision") / "m.pt", generator), generator


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FPA_EXPORT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: ("avx512_bf16",))


@pytest.fixture
def no_bf16_cpu(monkeypatch):
    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: ())


def _z(count=6, size=8):
    return torch.randn(count, size, generator=torch.Generator().manual_seed(3))


def test_fp32_is_the_default_and_bit_identical_to_eager(model):
    path, generator = model
    z = _z()
    with torch.no_grad():
        expected = generator(z)
    for sampler in (make_sampler(path, backend="torch"), make_sampler(path, backend="torch",
                                                                      precision="fp32")):
        assert sampler.precision == "fp32" and torch.equal(sampler(z), expected)


def test_unsupported_precisions_are_one_line_errors_naming_what_is_missing(model, no_bf16_cpu):
    path, _ = model
    with pytest.raises(PrecisionError, match="avx512_bf16 or amx_bf16") as info:
        make_sampler(path, backend="torch", precision="bf16")
    assert "\n" not in str(info.value)
    with pytest.raises(PrecisionError, match="fp16 needs a CUDA device"):
        make_sampler(path, precision="fp16")
    with pytest.raises(PrecisionError, match="must be one of"):
        make_sampler(path, precision="int8")


def test_an_empty_precision_is_a_mistake_not_fp32(model, tmp_path):
    """None means "the model's own" (fp32 for a checkpoint); '' (an unset variable, say) is refused."""
    path, _ = model
    with pytest.raises(PrecisionError, match="got ''"):
        make_sampler(path, backend="torch", precision="")
    with pytest.raises(PrecisionError, match="got ''"):
        sample_folder(SampleRun(tmp_path / "out", n=2, precision=""), path, progress=False)
    assert not (tmp_path / "out").exists()


def test_bf16_runs_the_network_low_and_the_painting_in_fp32(model, bf16_cpu, monkeypatch):
    path, generator = model
    seen = []
    real = fpa_module.delta_rule_writes

    def recording(keys, values, lrs):
        seen.append((keys.dtype, values.dtype, lrs.dtype))
        return real(keys, values, lrs)

    monkeypatch.setattr(fpa_module, "delta_rule_writes", recording)
    sampler = make_sampler(path, precision="bf16")  # auto: torch (onnxruntime has no bf16 path)
    assert sampler.name == "torch-cpu-bf16"
    assert sampler.generator.lstm.weight_hh_l0.dtype == torch.bfloat16
    assert sampler.generator.kvb.weight.dtype == torch.bfloat16
    images = sampler(_z())
    assert images.dtype == torch.float32
    assert seen and all(dtypes == (torch.float32,) * 3 for dtypes in seen)
    probe = sampler.precision_record["probe"]
    assert probe["images"] == P.PROBE_IMAGES and probe["within_2_levels"] >= 0.99
    with torch.no_grad():
        diff = (images - generator(_z())).abs().max()
    assert 0 < diff < 0.05  # really computed in bf16, and close


class _Offset:
    """A stand-in low-precision sampler: the reference shifted by `offset` (or NaN)."""

    def __init__(self, reference, offset):
        self.reference, self.offset, self.latent_size = reference, offset, reference.latent_size

    def __call__(self, z):
        return self.reference(z) + self.offset


def test_probe_refuses_beyond_the_tolerance_and_non_finite_images(model):
    path, _ = model
    reference = make_sampler(path, backend="torch")
    figures = P.probe(_Offset(reference, 0.0), reference, "bf16")
    assert figures["within_2_levels"] == 1.0 and figures["mean_levels"] == 0.0
    with pytest.raises(PrecisionError, match="too far from fp32"):
        P.probe(_Offset(reference, 4 / 255), reference, "bf16")
    with pytest.raises(PrecisionError, match="non-finite"):
        P.probe(_Offset(reference, float("nan")), reference, "bf16")


def test_an_exported_graph_runs_only_in_its_own_precision(model, tmp_path, bf16_cpu):
    pytest.importorskip("onnxruntime")
    from fpa_export.export import export_onnx

    graph = export_onnx(model[0], tmp_path / "g.onnx", exporter="torchscript").path
    assert make_sampler(graph).precision == "fp32"
    with pytest.raises(PrecisionError, match="exported in fp32"):
        make_sampler(graph, precision="bf16")
    with pytest.raises(PrecisionError, match="no bf16 graphs"):
        make_sampler(model[0], backend="onnx", precision="bf16")


def test_folder_records_the_precision_and_refuses_another(model, tmp_path, bf16_cpu):
    path, _ = model
    folder = tmp_path / "bf16"
    run = dict(n=5, batch_size=2, workers=1)
    sample_folder(SampleRun(folder, precision="bf16", **run), model=path, progress=False)
    record = json.loads((folder / "samples.json").read_text())
    assert record["model"]["precision"] == "bf16" and record["precision"]["name"] == "bf16"
    assert set(record["precision"]["probe"]) >= {"within_2_levels", "mean_levels", "max_levels"}
    before = sorted(p.read_bytes() for p in folder.glob("*.png"))
    with pytest.raises(FolderMismatch, match=r"a different precision \(bf16 vs fp32\)"):
        sample_folder(SampleRun(folder, **run), model=path, backend="torch", progress=False)
    assert sorted(p.read_bytes() for p in folder.glob("*.png")) == before
    other = save_checkpoint(tmp_path / "o.pt", make_generator(9))
    with pytest.raises(FolderMismatch, match="a different model .checkpoint sha256"):
        sample_folder(SampleRun(folder, precision="bf16", **run), model=other, progress=False)


def test_folders_of_older_manifests_keep_resuming(model, tmp_path):
    path, _ = model
    folder = tmp_path / "old"
    sample_folder(SampleRun(folder, n=3, workers=1), model=path, backend="torch", progress=False)
    record = json.loads((folder / "samples.json").read_text())
    record["model"]["precision"] = "float32"  # what earlier versions wrote
    record.pop("precision")
    (folder / "samples.json").write_text(json.dumps(record))
    report = sample_folder(SampleRun(folder, n=4, workers=1), model=path, backend="torch",
                           progress=False)
    assert (report.written, report.skipped) == (1, 3)


def test_cli_precision_errors_write_nothing(model, tmp_path, no_bf16_cpu):
    path, _ = model
    for precision, needle in (("fp16", "CUDA"), ("bf16", "avx512_bf16")):
        out = tmp_path / f"s-{precision}"
        result = CliRunner().invoke(sample_main, [str(path), "--n", "4", "--outdir", str(out),
                                                  "--precision", precision])
        assert result.exit_code == 1 and needle in result.output
        assert result.output.strip().count("\n") == 0 and not out.exists()


def test_load_generator_precision_and_no_grad(model, bf16_cpu):
    from fpa_export import load_generator

    path, generator = model
    gen = load_generator(path)
    images = gen(_z())
    assert not images.requires_grad
    assert images.clamp(0, 1).numpy().shape == (6, 3, 8, 8)  # works verbatim, no .detach() needed
    assert load_generator(path, requires_grad=True)(_z()).requires_grad
    assert load_generator(path, precision=None).kvb.weight.dtype == torch.float32  # as make_sampler's
    low = load_generator(path, precision="bf16")
    assert low.kvb.weight.dtype == torch.bfloat16 and low(_z()).dtype == torch.float32
    with pytest.raises(PrecisionError, match="CUDA"):
        load_generator(path, precision="fp16")


def test_a_generator_cast_to_low_precision_is_refused_by_samplers(model, tmp_path):
    """Its images would be recorded as fp32 without a probe: a sampler wants the fp32 generator and a
    precision, which it verifies."""
    from fpa_export.runtime import make_sampler
    from fpa_export.sampling import SampleRun, sample_folder

    _, generator = model
    low = copy.deepcopy(generator).to(torch.bfloat16)
    with pytest.raises(PrecisionError, match=r"has torch.bfloat16 weights.*precision='bf16'"):
        make_sampler(low, backend="torch")
    partly = copy.deepcopy(generator)
    partly.lstm.to(torch.float16)  # the rest stays fp32
    with pytest.raises(PrecisionError, match=r"has torch.float16 weights.*precision='fp16'"):
        make_sampler(partly, backend="torch")
    make_sampler(copy.deepcopy(generator).double(), backend="torch")  # fp64 paints in fp32, as before
    with pytest.raises(PrecisionError):
        sample_folder(SampleRun(tmp_path / "out", n=4), model=low, backend="torch", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("requires_grad", [False, True])
def test_low_precision_projection_is_one_matrix_product(requires_grad):
    """The key/value projection on the LSTM's (transposed) output is one product of the whole batch,
    however the weights were loaded: no batched product over a per-image copy of the weight (what
    torch's matmul does on that view when the weight needs no grad, a quarter of a bf16 batch)."""
    from torch.profiler import profile

    generator = make_generator(5).to(torch.bfloat16).requires_grad_(requires_grad)
    z = _z(4).to(torch.bfloat16)
    out_features, hidden = generator.kvb.weight.shape
    with torch.inference_mode(), profile(record_shapes=True) as trace:
        generator(z)
    shapes = [(e.key, e.input_shapes) for e in trace.key_averages(group_by_input_shape=True)]
    projections = [s for key, s in shapes if key in ("aten::mm", "aten::addmm")
                   and [hidden, out_features] in s]
    per_image = [s for key, s in shapes if key == "aten::bmm" and [4, hidden, out_features] in s]
    assert projections and not per_image, shapes


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    P.cpu_bf16_flags.cache_clear()
    text = "processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 avx2\n"
    real_read = pathlib.Path.read_text
    monkeypatch.setattr(pathlib.Path, "read_text",
                        lambda self, *a, **k: text if str(self) == "/proc/cpuinfo" else real_read(self, *a, **k))
    try:
        assert P.cpu_bf16_flags() == ("avx512_bf16",)
    finally:
        P.cpu_bf16_flags.cache_clear()


def test_agreement_figures():
    reference = torch.full((2, 1, 4, 4), 100, dtype=torch.uint8)
    images = reference.clone()
    images[0, 0, 0, 0] = 103  # one value 3 levels off out of 32
    figures = P.agreement(reference, images)
    assert figures["max_levels"] == 3 and figures["within_2_levels"] == pytest.approx(31 / 32)
    assert figures["mean_levels"] == pytest.approx(3 / 32, abs=1e-4)
    assert np.isclose(P.agreement(reference, reference)["mean_levels"], 0)


def test_gif_and_fd_take_the_precision(model, tmp_path, bf16_cpu):
    from fpa_export.cli.fd import main as fd_main
    from fpa_export.cli.gif import MODES, main as gif_main
    from fpa_export.painting.layout import MODES as LAYOUT_MODES

    assert MODES == LAYOUT_MODES  # fpa-gif spells them out so that --help stays light
    path, _ = model
    out = tmp_path / "p.gif"
    result = CliRunner().invoke(gif_main, [str(path), "-o", str(out), "--precision", "bf16"])
    assert result.exit_code == 0 and out.exists(), result.output
    for command, args in ((gif_main, [str(path), "-o", str(tmp_path / "q.gif")]),
                          (fd_main, [str(path), "default", "--n", "4"])):
        result = CliRunner().invoke(command, args + ["--precision", "fp16"])
        assert result.exit_code == 1 and "fp16 needs a CUDA device" in result.output, result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "q.gif").exists()


def test_fp16_and_fp32_graphs_of_one_model_never_share_a_folder(model, tmp_path):
    pytest.importorskip("onnxruntime")
    from fpa_export.export import export_onnx

    path, _ = model
    fp32 = export_onnx(path, tmp_path / "i.onnx", exporter="torchscript").path
    fp16 = export_onnx(path, tmp_path / "i16.onnx", fp16=True, exporter="torchscript").path
    folder = tmp_path / "s1000"
    sample_folder(SampleRun(folder, n=4, workers=1), model=fp32, progress=False)
    result = CliRunner().invoke(sample_main, [str(fp16), "--n", "6", "--outdir", str(folder)])
    assert result.exit_code == 1 and "a different precision (fp32 vs fp16)" in result.output
    assert len(list(folder.glob("*.png"))) == 4
