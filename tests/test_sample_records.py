"""What a folder's earlier runs left stays true: --overwrite replaces the old samples only once the new
run has painted, samples.json keeps every run's library versions, and shards claiming the manifest at
once lose none of their records."""
from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from fpa_export.common.lock import brief_lock
from fpa_export.sampling import manifest, pipeline, sample_folder
from fpa_export.sampling.pipeline import NonFiniteImages
from tests.conftest import make_generator
from tests.test_sample_safety import _run, _snapshot, model, private_cache  # noqa: F401 (fixtures)


def test_overwrite_with_a_model_that_paints_nan_keeps_the_old_samples(model, tmp_path):
    folder = tmp_path / "keep"
    sample_folder(_run(folder), model=model, backend="torch", progress=False)
    before = _snapshot(folder)
    broken = make_generator(32, channels=1)
    with torch.no_grad():
        broken.kvb.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteImages):
        sample_folder(_run(folder, overwrite=True), model=broken, backend="torch", progress=False)
    assert _snapshot(folder) == before


def test_overwrite_interrupted_before_its_first_batch_keeps_the_old_samples(model, tmp_path,
                                                                              monkeypatch):
    """Ctrl-C while the sampler exports or paints its first batch: nothing of the old run is lost."""
    folder = tmp_path / "ctrl-c"
    sample_folder(_run(folder), model=model, backend="torch", progress=False)
    before = _snapshot(folder)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
        yield  # a generator, as iter_samples is

    monkeypatch.setattr(pipeline, "iter_samples", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sample_folder(_run(folder, seed=3, overwrite=True), model=model, backend="torch", progress=False)
    assert _snapshot(folder) == before


def test_overwrite_still_replaces_every_old_sample(model, tmp_path):
    folder = tmp_path / "replace"
    sample_folder(_run(folder, n=8), model=model, backend="torch", progress=False)
    report = sample_folder(_run(folder, seed=4, overwrite=True), model=model, backend="torch",
                           progress=False)
    assert report.written == 6
    assert sorted(p.name for p in folder.glob("*.png")) == [f"{i:06d}.png" for i in range(6)]
    reference = tmp_path / "reference"
    sample_folder(_run(reference, seed=4), model=model, backend="torch", progress=False)
    assert _snapshot(folder) == _snapshot(reference)


def test_a_torch_run_keeps_the_onnxruntime_version_of_an_earlier_run(model, tmp_path):
    pytest.importorskip("onnxruntime")
    from importlib.metadata import version

    folder = tmp_path / "versions"
    sample_folder(_run(folder, n=4), model=model, backend="onnx", progress=False)
    sample_folder(_run(folder, n=8), model=model, backend="torch", progress=False)
    record = json.loads((folder / "samples.json").read_text())
    assert record["backends"] == ["onnxruntime-cpu", "torch-cpu"]
    assert record["versions"]["onnxruntime"] == version("onnxruntime")
    assert record["versions"]["torch"] == torch.__version__


def test_versions_that_differed_between_runs_are_all_listed():
    merged = manifest.versions({"torch": "2.12.0", "onnxruntime": "1.30.0"}, {"torch": "2.13.0"})
    assert merged == {"torch": ["2.12.0", "2.13.0"], "onnxruntime": "1.30.0"}
    again = manifest.versions(merged, {"torch": "2.13.0", "fpa-export": "1.0"})
    assert again == {"torch": ["2.12.0", "2.13.0"], "onnxruntime": "1.30.0", "fpa-export": "1.0"}


def test_shards_claiming_at_once_lose_no_model_path(tmp_path, monkeypatch):
    """Each shard reads, merges and writes samples.json; a slow read made every such write lose the
    others' paths before the claims took turns."""
    folder = tmp_path / "claims"
    folder.mkdir()
    base = manifest.build({"sha256": "a" * 64, "precision": "fp32", "path": "/m0.pt"}, {}, seed=0, n=8,
                          image_format="png", jpeg_quality=None, truncation=1.0)
    manifest.claim(folder, base)
    real = manifest.read

    def slow_read(*args, **kwargs):
        found = real(*args, **kwargs)
        time.sleep(0.05)
        return found

    monkeypatch.setattr(manifest, "read", slow_read)
    paths = [f"/m{k}.pt" for k in range(1, 5)]
    claims = [threading.Thread(target=manifest.claim, args=(folder, dict(
        base, model=dict(base["model"], path=path), model_paths=[path]))) for path in paths]
    for claim in claims:
        claim.start()
    for claim in claims:
        claim.join()
    record = json.loads((folder / "samples.json").read_text())
    assert record["model_paths"] == ["/m0.pt"] + paths
    assert sorted(p.name for p in folder.iterdir()) == ["samples.json"]  # the lock file is gone


def test_a_brief_lock_excludes_a_second_holder_and_leaves_no_file(tmp_path):
    path = tmp_path / ".lock"
    order = []

    def second():
        with brief_lock(path):
            order.append("second")

    with brief_lock(path):
        other = threading.Thread(target=second)
        other.start()
        time.sleep(0.1)
        order.append("first")
    other.join()
    assert order == ["first", "second"] and not path.exists()


@pytest.mark.parametrize("field, value, named", [
    ("n", "abc", "n is 'abc'"), ("n", None, "n is None"), ("n", -1, "n is -1"),
    ("backends", None, "backends is None"), ("backends", "abc", "backends is 'abc'"),
    ("versions", [1], "versions is [1]"), ("model_paths", [5], "model_paths is [5]"),
    ("model", "m.pt", "model is 'm.pt'"), ("format_version", 2, "format_version 2"),
    ("model", {"precision": ["fp32"]}, "model is {'precision': ['fp32']}"),
    ("seed", None, "seed is None"), ("seed", "0", "seed is '0'"), ("seed", True, "seed is True"),
    ("truncation", "1.0", "truncation is '1.0'"), ("truncation", 0, "truncation is 0"),
    ("image_format", None, "image_format is None"), ("jpeg_quality", "95", "jpeg_quality is '95'"),
    ("the whole file", "[" * 100_000, "unreadable"),  # nested too deeply for Python's JSON reader
])
def test_a_hand_edited_samples_json_of_wrong_types_is_one_line_and_overwrite_replaces_it(
        model, tmp_path, field, value, named):
    from click.testing import CliRunner

    from fpa_export.cli.sample import main as sample_main
    from tests.test_sample_safety import _one_line

    folder = tmp_path / "edited"
    sample_folder(_run(folder, n=4), model=model, backend="torch", progress=False)
    record = json.loads((folder / "samples.json").read_text())
    record[field] = value
    (folder / "samples.json").write_text(value if field == "the whole file" else json.dumps(record))
    before = _snapshot(folder)
    args = [str(model), "--n", "6", "--outdir", str(folder), "--backend", "torch"]
    _one_line(CliRunner().invoke(sample_main, args), named)
    assert _snapshot(folder) == before
    done = CliRunner().invoke(sample_main, args + ["--overwrite"])
    assert done.exit_code == 0, done.output
    assert json.loads((folder / "samples.json").read_text())["n"] == 6
