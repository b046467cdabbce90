"""Self-describing ONNX files and what every export refuses: the record inside the graph (read without
onnx), graphs without or with a foreign sidecar, malformed sidecars and garbage files, `--rgb`,
`--atol`, NaN in verification, and the sweep of temporaries left by killed exports."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

from fpa_export.models import save_checkpoint  # noqa: E402
from fpa_export.export import (ExportError, ExportSpec, config_from_sidecar, default_exporter,  # noqa: E402
                               export_onnx, read_export_record, read_sidecar, sidecar_path,
                               spec_from_record)
from fpa_export.export.onnx_meta import RECORD_KEY, read_metadata  # noqa: E402
from fpa_export.export.tempfiles import is_export_temporary, sweep_stale_temporaries  # noqa: E402
from fpa_export.export.verify import Tolerance, enforce, merge, compare_with_torch  # noqa: E402
from tests.conftest import make_generator  # noqa: E402


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny greyscale model exported once (torchscript): (checkpoint, generator, onnx path)."""
    folder = tmp_path_factory.mktemp("record")
    generator = make_generator(7, channels=1)
    checkpoint = save_checkpoint(folder / "grey.pt", generator)
    return checkpoint, generator, export_onnx(checkpoint, folder / "grey.onnx", exporter="torchscript").path


def _without_sidecar(path, tmp_path, name="alone.onnx"):
    copy = tmp_path / name
    copy.write_bytes(path.read_bytes())
    return copy


def test_metadata_props_and_doc_string_carry_the_record(exported):
    checkpoint, generator, path = exported
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    record = json.loads(props[RECORD_KEY])
    sidecar = read_sidecar(path)
    assert record["inputs"] == sidecar["inputs"] and record["config"] == sidecar["config"]
    assert record["results"]["verification"] == sidecar["results"]["verification"]
    assert record["inputs"]["checkpoint_sha256"] == props["fpa_export.checkpoint_sha256"]
    assert record["checkpoint"] == "grey.pt"  # the name only: no path of this machine in the file
    assert props["fpa_export.version"] == sidecar["inputs"]["versions"]["fpa-export"]
    assert props["fpa_export.verification"].startswith("image: max abs diff")
    assert "image graph" in model.doc_string and record["inputs"]["checkpoint_sha256"] in model.doc_string
    assert read_metadata(path)["doc_string"] == model.doc_string  # our reader agrees with onnx's
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert json.loads(meta.custom_metadata_map[RECORD_KEY]) == record


def test_a_graph_without_its_sidecar_is_fully_usable(exported, tmp_path):
    from fpa_export.runtime import make_sampler

    checkpoint, generator, path = exported
    alone = _without_sidecar(path, tmp_path)
    assert not sidecar_path(alone).exists()
    record = read_export_record(alone)
    assert record["record_source"] == "metadata" and record["output"]["bytes"] == alone.stat().st_size
    assert config_from_sidecar(alone) == generator.config
    assert spec_from_record(alone) == ExportSpec(generator.config)
    assert read_export_record(path)["record_source"] == "sidecar"
    z = torch.randn(3, generator.latent_size)
    sampler = make_sampler(str(alone), backend="onnx")
    torch.testing.assert_close(sampler(z), generator(z).detach(), rtol=0, atol=1e-4)


def test_reading_the_record_and_sampling_import_no_onnx(exported, tmp_path):
    alone = _without_sidecar(exported[2], tmp_path)
    code = ("import sys, torch; from fpa_export.export import read_export_record; "
            "from fpa_export.runtime import make_sampler; "
            f"r = read_export_record({str(alone)!r}); s = make_sampler({str(alone)!r}, backend='onnx'); "
            "s(torch.zeros(2, s.latent_size)); print(r['record_source'], 'onnx' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["metadata", "False"], done.stderr


def test_a_sidecar_of_another_graph_is_not_believed(exported, tmp_path):
    """Graph B replaced A's file but the kill came before A's sidecar was replaced: B's own record wins."""
    _, _, path = exported
    other = save_checkpoint(tmp_path / "b.pt", make_generator(8, channels=1))
    b = export_onnx(other, tmp_path / "b.onnx", exporter="torchscript").path
    target = tmp_path / "e3.onnx"
    target.write_bytes(b.read_bytes())
    sidecar_path(target).write_text(sidecar_path(path).read_text())  # A's sidecar beside B's graph
    record = read_export_record(target)
    assert record["record_source"] == "metadata"
    assert record["inputs"]["checkpoint_sha256"] == read_sidecar(b)["inputs"]["checkpoint_sha256"]


@pytest.mark.parametrize("with_sidecar", [False, True])
def test_a_graph_damaged_after_its_export_is_refused_in_one_line(exported, tmp_path, with_sidecar):
    """Bytes overwritten inside the weights: neither the sidecar (another sha256) nor the record in
    the graph (another payload) vouches for it, so it is refused, by name, instead of painting
    wrong images."""
    from fpa_export.export.onnx_meta import GraphModified, PAYLOAD_KEY
    from fpa_export.runtime import make_sampler

    _, _, path = exported
    assert len(read_metadata(path)[PAYLOAD_KEY]) == 64
    damaged = _without_sidecar(path, tmp_path, "damaged.onnx")
    if with_sidecar:
        sidecar_path(damaged).write_text(sidecar_path(path).read_text())
    data = bytearray(damaged.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 200] = bytes(200)
    damaged.write_bytes(bytes(data))
    with pytest.raises(GraphModified, match="damaged.onnx: the graph's contents are not the ones"):
        make_sampler(str(damaged), backend="onnx")


@pytest.mark.parametrize("text", [
    "[" * 100_000,                                  # RecursionError in json
    '{"inputs": [1, 2], "config": 3}',              # AttributeError / TypeError
    '{"inputs": {"spec": {}}, "config": {}}',       # KeyError
    "not json at all",
    "[1, 2, 3]",
])
def test_malformed_sidecars_fall_back_to_the_embedded_record(exported, tmp_path, text):
    alone = _without_sidecar(exported[2], tmp_path)
    sidecar_path(alone).write_text(text)
    assert read_export_record(alone)["record_source"] == "metadata"
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(4096))
    sidecar_path(garbage).write_text(text)
    assert read_export_record(garbage) is None
    with pytest.raises(ExportError, match="not an fpa-export file, nor any readable ONNX file"):
        config_from_sidecar(garbage)


def test_a_graph_with_bytes_appended_is_said_to_be_damaged(exported, tmp_path):
    alone = _without_sidecar(exported[2], tmp_path)
    with open(alone, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(ExportError, match="damaged, truncated or extended"):
        config_from_sidecar(alone)


@pytest.mark.parametrize("content", [b"", b"\x08", b"\x0a\xff\xff\xff\xff\x0f", os.urandom(2048),
                                     b"\x72\x05\x0a\x01"])
def test_garbage_and_truncated_files_have_no_record(tmp_path, content):
    path = tmp_path / "x.onnx"
    path.write_bytes(content)
    assert read_metadata(path) is None or RECORD_KEY not in read_metadata(path)
    assert read_export_record(path) is None


def test_a_truncated_export_loses_its_record(exported, tmp_path):
    data = exported[2].read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(data[: len(data) - 40])  # the metadata is written after the graph
    assert read_export_record(cut) is None


def test_onnxruntime_load_failure_is_one_line(exported, tmp_path):
    from fpa_export.runtime import make_sampler

    from fpa_export.export.onnx_meta import GraphModified, PAYLOAD_KEY

    model = onnx.load(str(exported[2]))
    model.graph.node[0].op_type = "NoSuchOperator"  # the record stays, the graph cannot load
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(model.SerializeToString())
    with pytest.raises(GraphModified):  # edited after its export: refused before onnxruntime sees it
        make_sampler(str(broken), backend="onnx")
    kept = [entry for entry in model.metadata_props if entry.key != PAYLOAD_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)  # as a graph of an earlier version, which records no payload
    broken.write_bytes(model.SerializeToString())
    with pytest.raises(ExportError, match="onnxruntime cannot load it") as info:
        sampler = make_sampler(str(broken), backend="onnx")
        sampler(torch.zeros(1, sampler.latent_size))
    assert "\n" not in str(info.value)


def test_rgb_graph_repeats_the_grey_channel(exported, tmp_path):
    checkpoint, generator, grey = exported
    z = torch.randn(5, generator.latent_size, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(grey), providers=["CPUExecutionProvider"])
    (one,) = session.run(None, {"z": z.numpy()})
    for uint8 in (False, True):
        rgb = export_onnx(checkpoint, tmp_path / f"rgb{uint8}.onnx", exporter="torchscript",
                          rgb=True, uint8=uint8)
        (three,) = ort.InferenceSession(str(rgb.path), providers=["CPUExecutionProvider"]).run(
            None, {"z": z.numpy()})
        assert three.shape == (5, 3, 8, 8) and three.dtype == (np.uint8 if uint8 else np.float32)
        assert (three[:, 0] == three[:, 1]).all() and (three[:, 1] == three[:, 2]).all()
        dims = onnx.load(str(rgb.path)).graph.output[0].type.tensor_type.shape.dim
        assert [d.dim_value for d in dims][1] == 3
        if not uint8:
            np.testing.assert_allclose(three[:, :1], one, rtol=0, atol=1e-6)
    assert spec_from_record(rgb.path).rgb and rgb.path.name == "rgbTrue.onnx"


def test_rgb_graph_samples_like_the_grey_model(exported, tmp_path):
    from fpa_export.runtime import make_sampler

    checkpoint, generator, _ = exported
    path = export_onnx(checkpoint, tmp_path / "rgb.onnx", exporter="torchscript", rgb=True).path
    z = torch.randn(2, generator.latent_size)
    torch.testing.assert_close(make_sampler(str(path), backend="onnx")(z), generator(z).detach(),
                               rtol=0, atol=1e-4)


def test_rgb_is_refused_for_the_steps_graph():
    with pytest.raises(ValueError, match="rgb"):
        ExportSpec(make_generator().config, graph="steps", rgb=True)


def _torch_fidelity_onnx_wrapper(monkeypatch):
    """torch-fidelity's own GenerativeModelONNX. Its package __init__ imports torchvision (which must
    match torch exactly and often cannot be installed); the ONNX wrapper itself needs only torch and
    onnxruntime, so when the package does not import, its modules are loaded without the __init__."""
    import importlib
    import importlib.util
    import types

    try:
        return importlib.import_module("torch_fidelity.generative_model_onnx").GenerativeModelONNX
    except ModuleNotFoundError as err:
        if err.name == "torch_fidelity":
            pytest.skip("torch-fidelity is not installed (pip install torch-fidelity to run this)")
    except Exception:
        pass
    spec = importlib.util.find_spec("torch_fidelity")
    package = types.ModuleType("torch_fidelity")
    package.__path__ = list(spec.submodule_search_locations)
    for name in [m for m in sys.modules if m == "torch_fidelity" or m.startswith("torch_fidelity.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch_fidelity", package)
    return importlib.import_module("torch_fidelity.generative_model_onnx").GenerativeModelONNX


def test_torch_fidelity_runs_the_rgb_uint8_graph(exported, tmp_path, monkeypatch):
    GenerativeModelONNX = _torch_fidelity_onnx_wrapper(monkeypatch)
    checkpoint, generator, _ = exported
    path = export_onnx(checkpoint, tmp_path / "tf.onnx", exporter="torchscript", rgb=True, uint8=True).path
    model = GenerativeModelONNX(str(path), generator.latent_size, "normal", 0)
    out = model(torch.randn(4, generator.latent_size))
    # the checks torch-fidelity's Inception extractor makes before anything else
    assert torch.is_tensor(out) and out.dtype == torch.uint8
    assert out.dim() == 4 and out.shape[1] == 3 and tuple(out.shape) == (4, 3, 8, 8)


def test_default_exporter_is_the_fast_one_while_torch_has_it():
    has_torchscript = callable(getattr(getattr(torch.onnx, "utils", None), "export", None))
    assert default_exporter() == ("torchscript" if has_torchscript else "dynamo")


def test_atol_overrides_the_tolerance_and_is_recorded(exported, tmp_path):
    checkpoint, _, _ = exported
    with pytest.raises(ExportError, match=r"tolerance 1e-12"):
        export_onnx(checkpoint, tmp_path / "strict.onnx", exporter="torchscript", atol=1e-12)
    assert not (tmp_path / "strict.onnx").exists()
    loose = export_onnx(checkpoint, tmp_path / "loose.onnx", exporter="torchscript", atol=1e-3)
    assert read_sidecar(loose.path)["inputs"]["atol"] == 1e-3
    spec = ExportSpec(make_generator().config)
    assert Tolerance.for_spec(spec, 0.5).max_diff == 0.5 and Tolerance.for_spec(spec).max_diff == 1e-4
    with pytest.raises(ExportError, match="atol"):
        Tolerance.for_spec(spec, float("nan"))


def test_nan_never_passes_the_comparison():
    spec = ExportSpec(make_generator().config)
    nan = float("nan")
    for report in ({"image": {"max_abs_diff": nan, "max_rel_diff": nan}},
                   {"image": {"max_levels": 0, "within_one_level": nan}}):
        with pytest.raises(ExportError):
            enforce(report, Tolerance.for_spec(spec), spec)
    worst = {}
    for batch in ({"max_rel_diff": 1e-7}, {"max_rel_diff": nan}, {"max_rel_diff": 2e-7}):
        merge(worst, batch)
    assert worst["max_rel_diff"] != worst["max_rel_diff"]  # still NaN after a later finite batch


@pytest.mark.parametrize("uint8", [False, True])
def test_nan_weights_fail_verification(uint8):
    generator = make_generator(3)
    with torch.no_grad():
        generator.kvb.weight.fill_(float("nan"))
    spec = ExportSpec(generator.config, uint8=uint8)
    from fpa_export.export.onnx_export import trace

    model = trace(generator, spec, exporter="torchscript")
    with pytest.raises(ExportError, match="NaN or inf"):
        compare_with_torch(model.SerializeToString(), spec, generator)


def test_stale_export_temporaries_are_swept_at_the_next_export(exported, tmp_path):
    checkpoint = exported[0]
    old, young = tmp_path / ".g.onnx.abcd1234.tmp", tmp_path / ".g.onnx.json.efgh5678.tmp"
    foreign = [tmp_path / ".notes.txt.abcd1234.tmp", tmp_path / "g.onnx.abcd1234.tmp",
               tmp_path / ".latest.pt.abcd1234.tmp"]
    for path in [old, young, *foreign]:
        path.write_bytes(b"x" * 16)
    an_hour_ago = time.time() - 3600
    for path in [old, *foreign]:
        os.utime(path, (an_hour_ago, an_hour_ago))
    export_onnx(checkpoint, tmp_path / "g.onnx", exporter="torchscript")
    assert not old.exists() and young.exists() and all(path.exists() for path in foreign)
    assert is_export_temporary(".m.plan.json.a_b1c2d3.tmp") and not is_export_temporary(".m.onnx.tmp")
    assert sweep_stale_temporaries(tmp_path / "missing") == []


def test_reuse_restores_a_missing_sidecar_from_the_embedded_record(exported, tmp_path):
    checkpoint, _, path = exported
    graph = tmp_path / "again.onnx"
    first = export_onnx(checkpoint, graph, exporter="torchscript")
    first.sidecar.unlink()
    again = export_onnx(checkpoint, graph, exporter="torchscript")
    assert again.reused and again.sidecar.is_file()
    assert json.loads(again.sidecar.read_text())["inputs"]["checkpoint_sha256"] == \
        json.loads((path.parent / (path.name + ".json")).read_text())["inputs"]["checkpoint_sha256"]


def test_an_edited_embedded_record_is_refused_too(exported, tmp_path):
    """The record is what gets believed: changing the image size inside it is a modified graph."""
    from fpa_export.export.onnx_meta import GraphModified
    from fpa_export.runtime import make_sampler

    _, generator, path = exported
    data = path.read_bytes()
    size = generator.config.image_size
    edited = data.replace(f'"image_size": {size},'.encode(), f'"image_size": {size + 1},'.encode(), 1)
    assert edited != data and len(edited) == len(data)
    for with_sidecar in (False, True):
        target = tmp_path / f"edited{with_sidecar}.onnx"
        target.write_bytes(edited)
        if with_sidecar:
            sidecar_path(target).write_text(sidecar_path(path).read_text())
        with pytest.raises(GraphModified):
            make_sampler(str(target), backend="onnx")
        again = export_onnx(exported[0], target, exporter="torchscript")
        assert not again.reused and read_export_record(target)["config"]["image_size"] == size


def test_a_sidecar_contradicting_its_graph_is_not_believed(exported, tmp_path):
    """A user's sidecar edited after the export (here: another latent size) still records the graph's
    sha256, but the graph's own record says otherwise: that record is read, and sampling works."""
    from fpa_export.runtime import make_sampler

    _, generator, path = exported
    copy = _without_sidecar(path, tmp_path, "user.onnx")
    record = read_sidecar(path)
    record["config"]["latent_size"] += 1
    sidecar_path(copy).write_text(json.dumps(record))
    assert read_export_record(copy)["record_source"] == "metadata"
    sampler = make_sampler(str(copy), backend="onnx")
    assert sampler.config.latent_size == generator.config.latent_size
    z = torch.randn(3, generator.config.latent_size)
    assert sampler(z).shape == (3, 1, generator.config.image_size, generator.config.image_size)


@pytest.mark.parametrize("edit", ["config", "spec tensors"])
def test_a_record_whose_config_and_spec_disagree_is_not_well_formed(exported, edit):
    """The check that holds for files without an embedded record (TensorRT plans): the config must be
    the spec's, and the spec's tensors those that config gives."""
    from fpa_export.export.sidecar import _well_formed

    record = read_sidecar(exported[2])
    assert _well_formed(record)
    if edit == "config":
        record["config"]["image_size"] *= 2
    else:
        record["inputs"]["spec"]["outputs"][0]["shape"][-1] *= 2
    assert not _well_formed(record)


def test_exporting_again_over_an_edited_sidecar_restores_it(exported, tmp_path):
    """The edited sidecar is still ours (it parses), so the export replaces it: the graph's own record
    matches these inputs and is written back, with no --force needed."""
    checkpoint, _, path = exported
    out = _without_sidecar(path, tmp_path, "again.onnx")
    good = read_sidecar(path)
    edited = json.loads(json.dumps(good))
    edited["config"]["latent_size"] += 1
    sidecar_path(out).write_text(json.dumps(edited))
    result = export_onnx(checkpoint, out, exporter="torchscript")
    restored = read_sidecar(out)
    assert restored["config"] == good["config"] and restored["inputs"] == good["inputs"]
    assert read_export_record(result.path)["record_source"] == "sidecar"


@pytest.mark.parametrize("results", [None, "x", {"verification": {"image": {"max_abs_diff": "big"}}},
                                     {"verification": {"image": {"max_abs_diff": 0.5}}}, "deleted"])
def test_edited_figures_in_a_sidecar_are_not_reported(exported, tmp_path, results):
    """`fpa-export onnx` run again over a sidecar whose measured figures were edited (removed, made
    text, or another number) reports the figures the graph itself records, not a traceback or the
    edit; the sidecar is written back."""
    from click.testing import CliRunner
    from fpa_export.cli.export import main

    checkpoint, _, path = exported
    out = _without_sidecar(path, tmp_path, "figures.onnx")
    good = read_sidecar(path)
    edited = json.loads(json.dumps(good))
    if results == "deleted":
        del edited["results"]
    else:
        edited["results"] = results
    sidecar_path(out).write_text(json.dumps(edited))
    result = CliRunner().invoke(main, ["onnx", str(checkpoint), "-o", str(out), "--exporter",
                                       "torchscript"])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    measured = good["results"]["verification"]["image"]["max_abs_diff"]
    assert "Reused" in result.output and f"image {measured:.2g}" in result.output, result.output
    assert read_sidecar(out)["results"] == good["results"]
