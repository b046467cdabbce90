"""Samplers behind `make_sampler`: every backend against the eager generator, one interface."""
from __future__ import annotations

import pytest
import torch

from fpa_export.models import save_checkpoint
from fpa_export.common.images import to_uint8
from fpa_export.runtime import Sampler, available_backends, make_sampler
from tests.conftest import make_generator


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtime")
    generator = make_generator(7, channels=1)
    return save_checkpoint(folder / "grey.pt", generator), generator


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FPA_EXPORT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _latents(batch: int, size: int) -> torch.Tensor:
    return torch.randn(batch, size, generator=torch.Generator().manual_seed(batch))


def _assert_matches_eager(sampler: Sampler, generator, batches=(1, 2, 7), steps=True):
    assert sampler.config == generator.config and sampler.latent_size == generator.latent_size
    for batch in batches:
        z = _latents(batch, sampler.latent_size)
        with torch.no_grad():
            painting = generator.paint(z)
        images = sampler(z)
        assert images.dtype == torch.float32 and images.device.type == "cpu"
        torch.testing.assert_close(images, painting.image, rtol=0, atol=1e-5)
        if steps:
            updates, partials = sampler.steps(z)
            torch.testing.assert_close(updates, painting.updates, rtol=0, atol=1e-5)
            torch.testing.assert_close(partials, painting.partials, rtol=0, atol=1e-5)


def test_torch_backend_from_checkpoint_and_from_generator(model):
    path, generator = model
    sampler = make_sampler(path, backend="torch")
    assert sampler.name == "torch-cpu"
    _assert_matches_eager(sampler, generator)
    _assert_matches_eager(make_sampler(generator, backend="torch"), generator, batches=(3,))


def test_default_model_runs_with_every_cpu_backend():
    for backend in ("torch", "onnx"):
        sampler = make_sampler(None, backend=backend)
        images = sampler(torch.randn(2, sampler.latent_size))
        c = sampler.config
        assert images.shape == (2, c.channels, c.image_size, c.image_size)
        assert images.abs().max() <= 1


@pytest.mark.parametrize("lstm", ["op", "unrolled"])
def test_onnx_backend_exports_on_demand_into_the_cache(model, lstm):
    pytest.importorskip("onnxruntime")
    path, generator = model
    sampler = make_sampler(path, backend="onnx", lstm=lstm)
    assert sampler.name == "onnxruntime-cpu"
    _assert_matches_eager(sampler, generator)


def test_onnx_file_sampler_reads_the_sidecar(model, tmp_path):
    pytest.importorskip("onnxruntime")
    from fpa_export.export import export_onnx

    path, generator = model
    image = export_onnx(path, tmp_path / "i.onnx", exporter="torchscript").path
    sampler = make_sampler(str(image))  # auto: an .onnx file runs in onnxruntime
    assert sampler.name == "onnxruntime-cpu"
    _assert_matches_eager(sampler, generator, steps=False)
    with pytest.raises(NotImplementedError, match="steps"):
        sampler.steps(_latents(1, sampler.latent_size))

    steps = export_onnx(path, tmp_path / "s.onnx", graph="steps", exporter="torchscript").path
    steps_sampler = make_sampler(steps, backend="onnx")
    updates, _ = steps_sampler.steps(_latents(2, sampler.latent_size))
    assert updates.shape == (2, 4, 1, 8, 8)
    with pytest.raises(NotImplementedError):
        steps_sampler(_latents(2, sampler.latent_size))

    uint8 = export_onnx(path, tmp_path / "u.onnx", uint8=True, exporter="torchscript").path
    z = _latents(5, sampler.latent_size)
    images = make_sampler(uint8)(z)  # uint8 graphs come back as x/255: the same bytes again
    assert (to_uint8(images).int() - to_uint8(generator(z).detach()).int()).abs().max() <= 1


def test_onnx_file_without_sidecar_or_record_is_a_clear_error(model, tmp_path):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from fpa_export.export import ExportError, export_onnx

    graph = export_onnx(model[0], tmp_path / "n.onnx", exporter="torchscript")
    graph.sidecar.unlink()
    make_sampler(graph.path)  # the record inside the graph is enough
    stripped = onnx.load(str(graph.path))
    del stripped.metadata_props[:]  # a graph from another tool: nothing says what it is
    graph.path.write_bytes(stripped.SerializeToString())
    with pytest.raises(ExportError, match="sidecar"):
        make_sampler(graph.path)


def test_auto_backend_and_argument_errors(model, tmp_path):
    path, generator = model
    expected = "onnxruntime-cpu" if "onnx" in available_backends("cpu") else "torch-cpu"
    assert make_sampler(path).name == expected
    assert make_sampler(generator).name == "torch-cpu"
    with pytest.raises(ValueError, match="backend"):
        make_sampler(path, backend="tensorflow")
    with pytest.raises(ValueError, match="only with backend='onnx'"):
        make_sampler(tmp_path / "x.onnx", backend="torch")
    with pytest.raises(ValueError, match="engine file"):
        make_sampler(path, backend="trt")
    with pytest.raises(ValueError, match="CUDA graphs need"):
        make_sampler(path, backend="torch", cuda_graphs=True)
    sampler = make_sampler(generator, backend="torch")
    with pytest.raises(ValueError, match=r"shape \(batch ≥ 1, 8\)"):
        sampler(torch.randn(2, 5))
    with pytest.raises(TypeError):
        sampler([[0.0] * 8])
    assert sampler(torch.randn(2, 8, dtype=torch.float64)).dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_sampler_matches_eager(model):
    path, generator = model
    sampler = make_sampler(path, backend="torch", device="cuda")
    assert sampler.name == "torch-cuda-graph"
    _assert_matches_eager(sampler, generator, batches=(1, 7, 7, 2))
