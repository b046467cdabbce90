"""The export cache keyed by content: copies reuse, interrupted exports are redone, concurrent exports
both succeed, an unwritable cache falls back, stale temp files are swept; the digest memo."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
import torch

from fpa_export.models import save_checkpoint
from fpa_export.runtime import cache, digest, make_sampler
from tests.conftest import make_generator

pytest.importorskip("onnxruntime")


@pytest.fixture
def checkpoint(tmp_path):
    return save_checkpoint(tmp_path / "m.pt", make_generator(11, channels=1))


@pytest.fixture
def exports(monkeypatch, tmp_path):
    """FPA_EXPORT_CACHE in tmp_path; returns the list of entries actually exported."""
    monkeypatch.setenv("FPA_EXPORT_CACHE", str(tmp_path / "cache"))
    done, real = [], cache._export

    def counting(checkpoint, out, *args):
        done.append(out)
        return real(checkpoint, out, *args)

    monkeypatch.setattr(cache, "_export", counting)
    return done


def _paint(path):
    return make_sampler(path, backend="onnx")(torch.zeros(2, 8))


def test_a_copied_or_renamed_checkpoint_reuses_its_export(checkpoint, exports, tmp_path):
    first = _paint(checkpoint)
    renamed = tmp_path / "elsewhere" / "renamed.pt"
    renamed.parent.mkdir()
    shutil.copy(checkpoint, renamed)
    assert torch.equal(_paint(renamed), first)
    assert len(exports) == 1 and exports[0].name == cache.GRAPH_NAME
    other = save_checkpoint(tmp_path / "other.pt", make_generator(12, channels=1))
    _paint(other)
    assert len(exports) == 2 and exports[1].parent != exports[0].parent  # other weights, other entry


def test_a_graph_replaced_after_its_record_is_never_used(checkpoint, exports):
    _paint(checkpoint)
    graph = exports[0]
    graph.write_bytes(graph.read_bytes()[:100])  # e.g. killed between graph and sidecar, or truncated
    _paint(checkpoint)
    assert len(exports) == 2 and graph.stat().st_size > 100


def test_an_unwritable_cache_falls_back_with_one_warning(checkpoint, monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FPA_EXPORT_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(cache.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    _paint(checkpoint)
    warning = capsys.readouterr().err.strip()
    assert warning.startswith("Warning: export cache") and warning.count("\n") == 0
    assert list((tmp_path / "tmp").glob("fpa-export-cache-*/*/model.onnx"))


def test_stale_temp_files_of_ours_are_swept(checkpoint, exports, tmp_path):
    root = tmp_path / "cache"
    entry = root / "entry"
    entry.mkdir(parents=True)
    old, fresh = entry / ".model.onnx.ab12cd34.tmp", root / ".digests.json.zz99yy88.tmp"
    stranger = entry / "notes.tmp.txt"
    for path in (old, fresh, stranger):
        path.write_bytes(b"x" * 10)
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    os.utime(stranger, (hour_ago, hour_ago))
    _paint(checkpoint)
    assert not old.exists() and fresh.exists() and stranger.exists()


def test_two_processes_exporting_at_once_both_succeed(checkpoint, tmp_path):
    env = {**os.environ, "FPA_EXPORT_CACHE": str(tmp_path / "shared")}
    code = ("import sys, torch; from fpa_export.runtime import make_sampler; "
            "s = make_sampler(sys.argv[1], backend='onnx'); print(float(s(torch.zeros(1, 8)).sum()))")
    runs = [subprocess.Popen([sys.executable, "-c", code, str(checkpoint)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert outputs[0][0] == outputs[1][0]
    graphs = list((tmp_path / "shared").glob("*/model.onnx"))
    assert len(graphs) == 1 and not list((tmp_path / "shared").rglob("*.tmp"))


def test_digest_memo_skips_rehashing_until_the_file_changes(tmp_path, monkeypatch):
    target = tmp_path / "big.bin"
    target.write_bytes(b"a" * 1000)
    calls, real = [], digest.sha256_of
    monkeypatch.setattr(digest, "sha256_of", lambda path: calls.append(path) or real(path))
    first = digest.file_sha256(target, memo_dir=tmp_path)
    assert digest.file_sha256(target, memo_dir=tmp_path) == first and len(calls) == 1
    target.write_bytes(b"b" * 1001)
    assert digest.file_sha256(target, memo_dir=tmp_path) != first and len(calls) == 2
    (tmp_path / digest.MEMO_NAME).write_text("{not json")
    assert digest.file_sha256(target, memo_dir=tmp_path) == real(target)  # a broken memo is ignored


def test_a_rewrite_with_size_and_mtime_put_back_is_hashed_again(tmp_path):
    """`cp` over a file then `touch -r` (or `cp -p`): same size and mtime, new content."""
    target, other = tmp_path / "m.bin", tmp_path / "other.bin"
    target.write_bytes(b"a" * 1000)
    other.write_bytes(b"b" * 1000)
    first = digest.file_sha256(target, memo_dir=tmp_path)
    stat = target.stat()
    time.sleep(0.01)
    target.write_bytes(other.read_bytes())  # in place: same inode, same size
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the old mtime put back
    assert target.stat().st_mtime_ns == stat.st_mtime_ns
    assert digest.file_sha256(target, memo_dir=tmp_path) == digest.sha256_of(other) != first


def test_a_damaged_entry_is_exported_again_not_used(checkpoint, exports):
    """Bytes overwritten inside the cached graph (its sidecar then records another sha256, and the
    graph's own record no longer matches its contents): the entry is exported again."""
    first = _paint(checkpoint)
    graph = exports[0]
    data = bytearray(graph.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 400] = bytes(400)
    graph.write_bytes(bytes(data))
    assert torch.equal(_paint(checkpoint), first)
    assert len(exports) == 2 and graph.read_bytes() != bytes(data)


def test_an_unwritable_cache_is_still_read_from_its_replacement(checkpoint, monkeypatch, tmp_path):
    """What went to the temp folder that replaced an unwritable cache is found there next time: the
    graph's record (no checkpoint load, no torch import) and the probe's fp32 reference."""
    import numpy as np

    from fpa_export.runtime import probe_reference

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FPA_EXPORT_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(cache.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    _paint(checkpoint)
    sha = digest.file_sha256(checkpoint)
    assert cache.known_export(sha)["config"]["image_size"] == 8
    painted = []

    def paint():
        painted.append(1)
        return np.zeros((probe_reference.PROBE_IMAGES, 1, 8, 8), np.uint8)

    first = probe_reference.cached_reference(sha, "cpu", paint)
    assert np.array_equal(probe_reference.cached_reference(sha, "cpu", paint), first)
    assert len(painted) == 1



def test_a_full_cache_falls_back_and_a_full_fallback_names_the_graph(checkpoint, exports, monkeypatch,
                                                                      tmp_path, capsys):
    """A disk fills while the graph is written (the write's error names no file): the temp folder, which
    may lie on another disk, takes the graph; when it is full too, the error names the graph's path."""
    import errno

    from fpa_export.common.atomic import atomic_write

    monkeypatch.setattr(cache.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    full, export, attempts = [tmp_path / "cache"], cache._export, []

    def no_room(handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    def filling(checkpoint, out, *args):
        attempts.append(out)
        if any(root in out.parents for root in full):
            atomic_write(out, no_room)
        return export(checkpoint, out, *args)

    monkeypatch.setattr(cache, "_export", filling)
    _paint(checkpoint)
    warning = capsys.readouterr().err.strip()
    assert warning.startswith(f"Warning: export cache {tmp_path / 'cache'} has no room for the graph")
    assert warning.count("\n") == 0
    assert [out.parent.parent.parent for out in exports] == [tmp_path / "tmp"]
    assert not list((tmp_path / "cache").rglob("model.onnx"))
    tried = len(attempts)
    _paint(checkpoint)  # the replacement's entry is found first: no second try at the full cache
    assert len(attempts) == tried and capsys.readouterr().err == ""
    full.append(tmp_path / "tmp")
    other = save_checkpoint(tmp_path / "other.pt", make_generator(12, channels=1))
    with pytest.raises(OSError) as err:
        _paint(other)
    assert err.value.errno == errno.ENOSPC and err.value.filename.endswith("model.onnx")
    assert str(tmp_path / "tmp") in err.value.filename


@pytest.mark.parametrize("damage", ["a file as the entry", "a folder as the graph"])
def test_a_damaged_entry_is_one_line_naming_it_and_is_kept(checkpoint, exports, damage):
    from fpa_export.common.errors import FpaError

    _paint(checkpoint)
    entry = exports[0].parent
    shutil.rmtree(entry)
    if damage == "a file as the entry":
        entry.write_text("x")
    else:
        (entry / cache.GRAPH_NAME).mkdir(parents=True)
    with pytest.raises(FpaError) as err:
        _paint(checkpoint)
    assert "a damaged export cache entry" in str(err.value) and f"remove {entry} " in str(err.value)
    assert "\n" not in str(err.value) and len(exports) == 1
    assert entry.is_file() if damage == "a file as the entry" else (entry / cache.GRAPH_NAME).is_dir()


@pytest.mark.parametrize("field, both", [("latent_size", False), ("image_size", False),
                                         ("image_size", True)])
def test_an_entry_sidecar_edited_to_another_config_is_not_believed(checkpoint, exports, field, both):
    """A sidecar still recording the graph's sha256 but claiming another latent or image size (in its
    `config`, or in the spec too) is not the graph's: the record inside the graph is read instead, so
    the run neither crashes in onnxruntime nor records sizes its files do not have."""
    import json
    from fpa_export.export.sidecar import sidecar_path

    first = _paint(checkpoint)
    sidecar = sidecar_path(exports[0])
    record = json.loads(sidecar.read_text())
    true_config = dict(record["config"])
    record["config"][field] *= 2
    if both:
        record["inputs"]["spec"]["config"][field] *= 2
    sidecar.write_text(json.dumps(record))
    sampler = make_sampler(checkpoint, backend="onnx")
    assert sampler.config.to_dict() == true_config
    assert torch.equal(sampler(torch.zeros(2, 8)), first)
    assert len(exports) == 1
