"""Sample folders are never mixed, raced or half-made: locks, lazy plans, NaN, graphs checked by content,
--verify, steps-only graphs, capped threads (issue 16 and 15)."""
from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fpa_export.cli.fd import main as fd_main
from fpa_export.cli.sample import main as sample_main
from fpa_export.common.lock import folder_lock
from fpa_export.models import save_checkpoint
from fpa_export.runtime import make_sampler
from fpa_export.sampling import FolderMismatch, SampleRun, pipeline, sample_folder
from fpa_export.sampling.pipeline import NonFiniteImages
from tests.conftest import make_generator


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("safety") / "m.pt", make_generator(21, channels=1))


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FPA_EXPORT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _run(folder, **options):
    return SampleRun(folder, **{"n": 6, "batch_size": 2, "workers": 1, **options})


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _one_line(result, text):
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and text in errors[0], result.output


def test_a_second_writer_is_refused_and_touches_nothing(model, tmp_path):
    folder = tmp_path / "busy"
    sample_folder(_run(folder), model=model, backend="torch", progress=False)
    before = _snapshot(folder)
    with folder_lock(folder, "sample folder"):  # as if another process were writing it
        result = CliRunner().invoke(sample_main, [str(model), "--n", "9", "--outdir", str(folder),
                                                  "--backend", "torch"])
        _one_line(result, f"being written by process {os.getpid()}")
    assert _snapshot(folder) == before


@pytest.mark.parametrize("name", ["samples.json", "000003.png", "000009.png"])
def test_a_folder_where_a_file_belongs_is_refused_before_anything_is_removed(model, tmp_path, name):
    """Nothing can replace a folder named samples.json or 000003.png: even --overwrite refuses the run
    up front instead of removing the samples and failing on it."""
    folder = tmp_path / "s"
    sample_folder(_run(folder), model=model, backend="torch", progress=False)
    (folder / name).unlink(missing_ok=True)
    (folder / name).mkdir()
    before = _snapshot(folder)
    for extra in ([], ["--overwrite"]):
        result = CliRunner().invoke(sample_main, [str(model), "--n", "6", "--outdir", str(folder),
                                                  "--backend", "torch", *extra])
        _one_line(result, f"{name}: a folder, not a file")
        assert _snapshot(folder) == before and (folder / name).is_dir()


def test_a_huge_n_paints_its_first_images_at_once(model, tmp_path, monkeypatch):
    real = pipeline.iter_samples

    def first_batch_only(*args, **kwargs):
        batches = real(*args, **kwargs)
        yield next(batches)
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "iter_samples", first_batch_only)
    monkeypatch.setattr(pipeline, "check_room", lambda *args: None)  # 10^9 files fit (pretended)
    folder = tmp_path / "huge"
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        sample_folder(_run(folder, n=10**9), model=model, backend="torch", progress=False)
    assert time.monotonic() - start < 20  # the plan is lazy: no list of 10^9 indices
    assert (folder / "000000.png").exists() and (folder / "000001.png").exists()
    assert json.loads((folder / "samples.json").read_text())["n"] == 10**9


class _FileSystem:
    """What os.statvfs answers, with the free blocks and inodes chosen."""

    def __init__(self, blocks, inodes, files=10**6):
        self.f_frsize, self.f_bavail, self.f_favail, self.f_files = 4096, blocks, inodes, files


@pytest.mark.parametrize("blocks, inodes, files, fits", [
    (1, 10**6, 10**6, False),       # 4 KiB free: 30 stored 8-px PNGs (140 bytes each) need more
    (10**6, 20, 10**6, False),      # 20 inodes free for 30 files
    (10**6, 0, 0, True),            # no inode limit (f_files 0), space enough
    (10**6, 10**6, 10**6, True),
])
def test_a_run_that_cannot_fit_the_disk_is_refused_before_painting(model, tmp_path, monkeypatch, blocks,
                                                                   inodes, files, fits):
    from fpa_export.sampling import imagefiles

    monkeypatch.setattr(imagefiles.os, "statvfs", lambda path: _FileSystem(blocks, inodes, files))
    folder = tmp_path / "s"
    result = CliRunner().invoke(sample_main, [str(model), "--n", "30", "--outdir", str(folder)])
    if fits:
        assert result.exit_code == 0, result.output
        assert len(list(folder.glob("*.png"))) == 30
        return
    assert result.exit_code == 1 and "30 more files of at least" in result.output, result.output
    assert "free some space or use a smaller --n" in result.output and "Traceback" not in result.output
    assert not folder.exists() or not list(folder.glob("*.png"))  # nothing painted, nothing written


def _nan_generator():
    generator = make_generator(22, channels=1)
    with torch.no_grad():
        generator.kvb.bias.fill_(float("nan"))
    return generator


def test_non_finite_images_are_an_error_and_nothing_is_written(tmp_path):
    folder = tmp_path / "nan"
    with pytest.raises(NonFiniteImages, match="non-finite"):
        sample_folder(_run(folder), model=_nan_generator(), backend="torch", progress=False)
    assert not folder.exists()  # not even samples.json or an empty folder


def test_steps_only_graph_is_one_line_and_writes_nothing(model, tmp_path):
    pytest.importorskip("onnxruntime")
    from fpa_export.export import export_onnx

    steps = export_onnx(model, tmp_path / "steps.onnx", graph="steps", exporter="torchscript").path
    out = tmp_path / "so4"
    _one_line(CliRunner().invoke(sample_main, [str(steps), "--n", "10", "--outdir", str(out)]),
              "steps graph")
    assert not out.exists()
    real = tmp_path / "real"
    real.mkdir()
    for k in range(3):
        from PIL import Image

        Image.fromarray(np.full((8, 8, 3), 40 * k, dtype=np.uint8)).save(real / f"{k}.png")
    _one_line(CliRunner().invoke(fd_main, [str(real), str(steps), "--n", "4"]), "steps graph")


def test_a_graph_replaced_after_its_sidecar_is_known_by_its_embedded_record(model, tmp_path):
    pytest.importorskip("onnxruntime")
    from fpa_export.export import export_onnx

    graph = export_onnx(model, tmp_path / "E3.onnx", exporter="torchscript").path
    folder = tmp_path / "a"
    sample_folder(_run(folder), model=graph, progress=False)
    other = save_checkpoint(tmp_path / "b.pt", make_generator(23, channels=1))
    replacement = export_onnx(other, tmp_path / "b.onnx", exporter="torchscript").path
    shutil.copy(replacement, graph)  # killed after the graph was replaced, before its sidecar
    before = _snapshot(folder)
    result = CliRunner().invoke(sample_main, [str(graph), "--n", "12", "--outdir", str(folder)])
    # The stale sidecar (model A) is not believed: the graph's own embedded record says model B, so
    # the folder of model A refuses it, naming the difference, and nothing is added to it.
    _one_line(result, "different model")
    assert _snapshot(folder) == before
    from fpa_export.export.sidecar import read_export_record, sha256_file

    record = read_export_record(graph)
    assert record["record_source"] == "metadata"
    assert record["inputs"]["checkpoint_sha256"] == sha256_file(other)


def test_a_sidecar_claiming_other_shapes_is_refused(model, tmp_path):
    pytest.importorskip("onnxruntime")
    from fpa_export.export import export_onnx
    from fpa_export.export.sidecar import ExportError

    result = export_onnx(model, tmp_path / "g.onnx", exporter="torchscript")
    record = json.loads(result.sidecar.read_text())
    for section in (record["config"], record["inputs"]["spec"]["config"]):
        section["channels"] = 3
    for tensor in record["inputs"]["spec"]["outputs"]:
        tensor["shape"][1] = 3
    result.sidecar.write_text(json.dumps(record))
    sampler = make_sampler(result.path)  # the sidecar contradicts the graph's own record: not believed
    assert sampler.config.channels == 1 and sampler(torch.zeros(1, 8)).shape[1] == 1
    # a record without the graph's own to contradict it (a graph of an older version) meets the shapes
    import onnxruntime
    from fpa_export.export import ExportSpec
    from fpa_export.runtime.onnx_backend import check_shapes

    claimed = ExportSpec.from_dict(record["inputs"]["spec"])
    with pytest.raises(ExportError, match="record claims"):
        check_shapes(result.path, claimed, onnxruntime.InferenceSession(str(result.path)))


def test_verify_repaints_existing_files_and_refuses_other_content(model, tmp_path):
    folder = tmp_path / "v"
    sample_folder(_run(folder), model=model, backend="torch", progress=False)
    report = sample_folder(_run(folder, verify=True), model=model, backend="torch", progress=False)
    assert (report.written, report.skipped) == (0, 6)
    (folder / "000003.png").write_bytes((folder / "000004.png").read_bytes())  # valid, wrong image
    report = sample_folder(_run(folder), model=model, backend="torch", progress=False)
    assert report.skipped == 6  # by default only decoding is checked (documented)
    before = _snapshot(folder)
    with pytest.raises(FolderMismatch, match="000003.png: --verify repainted it"):
        sample_folder(_run(folder, n=8, verify=True), model=model, backend="torch", progress=False)
    assert _snapshot(folder) == before


def test_threads_are_capped_to_the_cores():
    cores = os.cpu_count() or 1
    painting, writing = SampleRun("x", n=1, threads=1000, workers=10**6).thread_counts()
    assert painting == cores and writing == 8 * cores


def test_one_sampling_run_loads_the_checkpoint_once(model, tmp_path, monkeypatch):
    import fpa_export.models as models

    loads, real = [], models.load_checkpoint
    monkeypatch.setattr(models, "load_checkpoint", lambda *a, **k: loads.append(a) or real(*a, **k))
    result = CliRunner().invoke(sample_main, [str(model), "--n", "3", "--outdir", str(tmp_path / "o"),
                                              "--backend", "torch"])
    assert result.exit_code == 0, result.output
    assert len(loads) == 1


def test_samples_json_names_onnxruntime_when_it_ran(model, tmp_path):
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "ort"
    report = sample_folder(_run(folder), model=model, backend="onnx", progress=False)
    versions = json.loads((folder / "samples.json").read_text())["versions"]
    assert report.backend == "onnxruntime-cpu" and versions.get("onnxruntime")


def test_shards_write_one_folder_side_by_side_and_overwrite_waits_for_them(model, tmp_path):
    folder = tmp_path / "shards"
    sample_folder(_run(folder, shard=(0, 2)), model=model, backend="torch", progress=False)
    with folder_lock(folder, "sample folder", shared=True):  # shard 0/2 still writing elsewhere
        report = sample_folder(_run(folder, shard=(1, 2)), model=model, backend="torch", progress=False)
        assert report.written == 3
        before = _snapshot(folder)
        result = CliRunner().invoke(sample_main, [str(model), "--n", "6", "--outdir", str(folder),
                                                  "--backend", "torch", "--overwrite"])
        _one_line(result, f"being written by process {os.getpid()}")
        assert _snapshot(folder) == before
    assert sorted(p.name for p in folder.glob("*.png")) == [f"{i:06d}.png" for i in range(6)]


def test_overwriting_one_shard_with_another_run_never_mixes_the_folder(model, tmp_path):
    folder = tmp_path / "mixed"
    sample_folder(_run(folder), model=model, backend="torch", progress=False)
    sample_folder(_run(folder, shard=(1, 2), seed=5, overwrite=True), model=model, backend="torch",
                  progress=False)
    assert json.loads((folder / "samples.json").read_text())["seed"] == 5
    assert sorted(p.name for p in folder.glob("*.png")) == [f"{i:06d}.png" for i in (1, 3, 5)]
    other = tmp_path / "reference"
    sample_folder(_run(other, seed=5), model=model, backend="torch", progress=False)
    for name in ("000001.png", "000003.png", "000005.png"):
        assert (folder / name).read_bytes() == (other / name).read_bytes()


def test_a_rerun_of_one_shard_with_overwrite_keeps_the_other_shards(model, tmp_path):
    folder = tmp_path / "redo"
    sample_folder(_run(folder), model=model, backend="torch", progress=False)
    kept = (folder / "000000.png").stat().st_ino
    report = sample_folder(_run(folder, shard=(1, 2), overwrite=True), model=model, backend="torch",
                           progress=False)
    assert report.written == 3 and (folder / "000000.png").stat().st_ino == kept


def test_a_shard_of_another_run_that_began_meanwhile_is_refused_before_writing(model, tmp_path,
                                                                                monkeypatch):
    """Two shards of different runs start on a fresh folder at once (they share its lock): the one
    whose first batch comes second finds the other's samples.json and stops, writing nothing."""
    folder = tmp_path / "race"
    real = pipeline.iter_samples

    def other_run_begins_meanwhile(*args, **kwargs):
        monkeypatch.setattr(pipeline, "iter_samples", real)  # the other run paints as usual
        for number, batch in enumerate(real(*args, **kwargs)):
            if number == 0:
                sample_folder(_run(folder, shard=(0, 2), seed=9), model=model, backend="torch",
                              progress=False)
            yield batch

    monkeypatch.setattr(pipeline, "iter_samples", other_run_begins_meanwhile)
    with pytest.raises(FolderMismatch, match="seed"):
        sample_folder(_run(folder, shard=(1, 2)), model=model, backend="torch", progress=False)
    assert json.loads((folder / "samples.json").read_text())["seed"] == 9
    assert sorted(p.name for p in folder.glob("*.png")) == [f"{i:06d}.png" for i in (0, 2, 4)]


def test_of_two_runs_racing_for_a_fresh_folder_one_claims_it(model, tmp_path, monkeypatch):
    """Both read "no samples.json"; the second to create it finds the first's and is refused."""
    from fpa_export.sampling import manifest

    folder = tmp_path / "claim"
    folder.mkdir()
    first = dict(manifest.build({"sha256": "a" * 64, "precision": "fp32"}, {}, seed=0, n=4,
                                image_format="png", jpeg_quality=None, truncation=1.0), backends=["x"])
    second = dict(first, seed=1)
    assert manifest.claim(folder, first)["seed"] == 0
    real, calls = manifest.read, []
    monkeypatch.setattr(manifest, "read", lambda f: calls.append(1) or (None if len(calls) == 1 else real(f)))
    with pytest.raises(FolderMismatch, match="seed"):
        manifest.claim(folder, second)  # read "none", lost the race to create it, then compared
    assert len(calls) == 2 and json.loads((folder / "samples.json").read_text())["seed"] == 0
    monkeypatch.setattr(manifest, "read", real)
    assert manifest.claim(folder, dict(first, backends=["y"]))["backends"] == ["x", "y"]


def test_an_interrupted_runs_n_is_a_plan_and_a_smaller_n_covering_its_files_continues(model, tmp_path):
    folder = tmp_path / "s"
    sample_folder(_run(folder, n=12), str(model), backend="torch", progress=False)
    for index in range(8, 12):  # as if Ctrl-C came after image 7: the manifest still says 12
        (folder / f"{index:06d}.png").unlink()
    kept = _snapshot(folder)
    with pytest.raises(FolderMismatch, match="holds 8 samples, up to index 7.*--n 5 would leave 3 beyond "
                                             "it; give --n 8 or more"):
        sample_folder(_run(folder, n=5), str(model), backend="torch", progress=False)
    assert _snapshot(folder) == kept
    assert sample_folder(_run(folder, n=8), str(model), backend="torch", progress=False).written == 0
    assert sample_folder(_run(folder, n=10), str(model), backend="torch", progress=False).written == 2
    assert json.loads((folder / "samples.json").read_text())["n"] == 10


def test_overwrite_replaces_an_unreadable_samples_json(model, tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "samples.json").write_text("{bad")
    args = [str(model), "--n", "4", "--outdir", str(folder), "--backend", "torch"]
    _one_line(CliRunner().invoke(sample_main, args), "unreadable; remove it or pass --overwrite")
    done = CliRunner().invoke(sample_main, args + ["--overwrite"])
    assert done.exit_code == 0, done.output
    assert json.loads((folder / "samples.json").read_text())["n"] == 4 and (folder / "000003.png").is_file()


def test_reference_stats_with_one_image_is_refused_before_the_folder_exists(model, tmp_path):
    (tmp_path / "ref.npz").write_bytes(b"")  # exists; refused before it is read
    result = CliRunner().invoke(sample_main, [str(model), "--n", "1", "--outdir", str(tmp_path / "s"),
                                              "--reference-stats", str(tmp_path / "ref.npz")])
    _one_line(result, "--reference-stats needs --n 2 or more")
    assert not (tmp_path / "s").exists()


def test_samples_json_records_every_file_that_painted_into_it_absolute(model, tmp_path, monkeypatch):
    import shutil

    folder, copy = tmp_path / "s", tmp_path / "elsewhere" / "copy.pt"
    copy.parent.mkdir()
    shutil.copy(model, copy)
    sample_folder(_run(folder, n=2), str(model), backend="torch", progress=False)
    monkeypatch.chdir(copy.parent)  # a relative path, from another working folder
    sample_folder(_run(folder, n=4), "copy.pt", backend="torch", progress=False)
    record = json.loads((folder / "samples.json").read_text())
    assert record["model"]["path"] == str(copy.resolve())
    assert record["model_paths"] == sorted([str(model.resolve()), str(copy.resolve())])
