"""ONNX export: both graphs of every tiny model kind, both exporters, verified against eager PyTorch.

The reference is always the eager generator with nn.LSTM (not the unrolled cell being exported), and
the exported files are run in onnxruntime here again, at batch sizes 1, 2 and 7 from one file.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

from fpa_export.models import save_checkpoint  # noqa: E402
from fpa_export.common.images import to_uint8  # noqa: E402
from fpa_export.export import ExportError, ExportSpec, export_onnx, read_sidecar  # noqa: E402
from fpa_export.export.verify import Tolerance, enforce  # noqa: E402
from tests.conftest import TINY_VARIANTS, make_generator  # noqa: E402

CONTROL_FLOW = {"Loop", "Scan", "If", "LSTM"}


def _needs_unet(name: str) -> None:
    if "unet" in name:
        pytest.importorskip("fpa_export.models.unet")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """One tiny checkpoint per model kind (v1, v2, greyscale, U-Net when models/unet.py exists)."""
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {}
    for name, changes in TINY_VARIANTS.items():
        try:
            generator = make_generator(1, **changes)
        except ImportError:
            continue
        paths[name] = save_checkpoint(folder / f"{name}.pt", generator), generator
    return paths


def _run(path, z: torch.Tensor) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"z": z.numpy()})


def _eager(generator, graph: str, z: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        if graph == "image":
            return [generator(z)]
        painting = generator.paint(z)
        return [painting.updates, painting.partials]


def _check_against_eager(path, generator, graph: str, batches=(1, 2, 7), atol=1e-4):
    for batch in batches:
        z = torch.randn(batch, generator.latent_size, generator=torch.Generator().manual_seed(batch))
        outputs = _run(path, z)
        expected = _eager(generator, graph, z)
        assert len(outputs) == len(expected)
        for got, want in zip(outputs, expected):
            assert got.shape == tuple(want.shape)
            np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=atol)


@pytest.mark.parametrize("graph", ["image", "steps"])
@pytest.mark.parametrize("name", sorted(TINY_VARIANTS))
def test_torchscript_export_matches_eager_at_dynamic_batch(checkpoints, tmp_path, name, graph):
    _needs_unet(name)
    path, generator = checkpoints[name]
    result = export_onnx(path, tmp_path / "g.onnx", graph=graph, exporter="torchscript")
    assert not result.reused and result.path.is_file() and result.sidecar.is_file()
    assert all(diff <= 1e-4 for diff in result.max_abs_diff.values())
    model = onnx.load(str(result.path))
    assert not CONTROL_FLOW & {node.op_type for node in model.graph.node}  # a straight line
    assert [o.name for o in model.graph.output] == ExportSpec(generator.config, graph).output_names
    _check_against_eager(result.path, generator, graph)


@pytest.mark.parametrize("name, graph", [("v2_unet", "image"), ("v1", "steps")])
def test_dynamo_export_matches_eager_and_keeps_static_dims(checkpoints, tmp_path, name, graph):
    _needs_unet(name)
    pytest.importorskip("onnxscript")
    path, generator = checkpoints[name]
    result = export_onnx(path, tmp_path / "g.onnx", graph=graph, exporter="dynamo")
    model = onnx.load(str(result.path))
    assert not CONTROL_FLOW & {node.op_type for node in model.graph.node}
    dims = model.graph.output[0].type.tensor_type.shape.dim
    c = generator.config
    static = [c.channels, c.image_size, c.image_size]
    assert [d.dim_value for d in dims][-3:] == static and dims[0].dim_param  # batch is symbolic
    _check_against_eager(result.path, generator, graph)


def test_lstm_op_option_emits_the_onnx_lstm_and_agrees(checkpoints, tmp_path):
    path, generator = checkpoints["v2"]
    result = export_onnx(path, tmp_path / "op.onnx", lstm="op", exporter="torchscript")
    ops = {node.op_type for node in onnx.load(str(result.path)).graph.node}
    assert "LSTM" in ops
    _check_against_eager(result.path, generator, "image", batches=(1, 3))


def test_uint8_output_follows_the_to_uint8_rule(checkpoints, tmp_path):
    path, generator = checkpoints["v2"]
    result = export_onnx(path, tmp_path / "u8.onnx", uint8=True, exporter="torchscript")
    z = torch.randn(5, generator.latent_size)
    (got,) = _run(result.path, z)
    assert got.dtype == np.uint8 and got.shape == (5, 3, 8, 8)
    want = to_uint8(generator(z).detach()).numpy().astype(int)
    assert np.abs(got.astype(int) - want).max() <= 1
    assert (got == want).mean() > 0.99


def test_fp16_graph_passes_its_tolerance_and_keeps_float32_where_required(checkpoints, tmp_path):
    path, generator = checkpoints["v2"]
    result = export_onnx(path, tmp_path / "h.onnx", fp16=True, exporter="torchscript")
    assert result.max_abs_diff["image"] <= 2e-2
    assert result.report["image"]["within_one_level"] >= 0.99
    model = onnx.shape_inference.infer_shapes(onnx.load(str(result.path)))
    graph = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in
             list(graph.value_info) + list(graph.input) + list(graph.output)}
    types.update({init.name: init.data_type for init in graph.initializer})
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    for node in graph.node:
        if node.op_type in ("Softmax", "Tanh", "Sigmoid"):
            assert types[node.input[0]] == fp32, node.name
    products = [node for node in graph.node if node.op_type in ("MatMul", "Gemm")]
    assert any(types[node.input[0]] == fp16 for node in products)  # the weight products
    assert types["z"] == fp32 and types["image"] == fp32
    assert any(init.data_type == fp16 for init in graph.initializer)
    _check_against_eager(result.path, generator, "image", batches=(1, 7), atol=2e-2)


def test_sidecar_reuses_identical_inputs_and_rebuilds_on_changes(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "m.pt", make_generator(2))
    out = tmp_path / "m.onnx"
    first = export_onnx(checkpoint, out, exporter="torchscript")
    sidecar = read_sidecar(out)
    assert sidecar["inputs"]["exporter"] == "torchscript" and sidecar["inputs"]["opset"] == 18
    assert sidecar["inputs"]["versions"]["onnx"] == onnx.__version__
    assert sidecar["config"]["image_size"] == 8 and "verification" in sidecar["results"]
    assert export_onnx(checkpoint, out, exporter="torchscript").reused
    assert not export_onnx(checkpoint, out, exporter="torchscript", opset=17).reused  # changed option

    save_checkpoint(checkpoint, make_generator(3))  # new weights, same path
    rebuilt = export_onnx(checkpoint, out, exporter="torchscript", opset=17)
    assert not rebuilt.reused
    assert read_sidecar(out)["inputs"]["checkpoint_sha256"] != sidecar["inputs"]["checkpoint_sha256"]

    out.write_bytes(out.read_bytes()[:-10])  # a damaged output is rebuilt, not trusted
    assert not export_onnx(checkpoint, out, exporter="torchscript", opset=17).reused
    assert first.path == out


def test_failed_verification_raises_and_names_the_output():
    spec = ExportSpec(make_generator().config)
    with pytest.raises(ExportError, match="image: onnxruntime differs from PyTorch by 0.5"):
        enforce({"image": {"max_abs_diff": 0.5, "max_rel_diff": 0.5}}, Tolerance.for_spec(spec), spec)
    fp16 = ExportSpec(spec.config, fp16=True)
    with pytest.raises(ExportError, match="98.00 % of uint8 pixels"):
        enforce({"image": {"max_abs_diff": 0.01, "max_rel_diff": 0.01, "within_one_level": 0.98}},
                 Tolerance.for_spec(fp16), fp16)


def test_spec_validates_its_options():
    config = make_generator().config
    with pytest.raises(ValueError, match="uint8"):
        ExportSpec(config, graph="steps", uint8=True)
    with pytest.raises(ValueError, match="graph"):
        ExportSpec(config, graph="video")
    spec = ExportSpec(config, graph="steps")
    assert spec.outputs[0].concrete_shape(5) == (5, 4, 3, 8, 8)
    assert ExportSpec.from_dict(spec.to_dict()) == spec
