"""The fp32 half of the precision probe is kept by content (runtime.probe_reference): painted once per
weights, device kind and torch version; a torn, stale or foreign entry is painted again."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fpa_export.runtime import probe_reference as R
from fpa_export.runtime.precision import PROBE_IMAGES

SHA = "ab" * 32


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FPA_EXPORT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


class Painter:
    def __init__(self, value=7):
        self.calls, self.value = 0, value

    def __call__(self):
        self.calls += 1
        return np.full((PROBE_IMAGES, 3, 4, 4), self.value, dtype=np.uint8)


def test_the_reference_is_painted_once_then_read_back():
    paint = Painter()
    first = R.cached_reference(SHA, "cpu", paint)
    again = R.cached_reference(SHA, "cpu", paint)
    assert paint.calls == 1 and again.dtype == np.uint8 and np.array_equal(first, again)
    other = Painter(9)
    assert R.cached_reference("cd" * 32, "cpu", other)[0, 0, 0, 0] == 9 and other.calls == 1  # other weights
    assert R.cached_reference(SHA, "cuda", other)[0, 0, 0, 0] == 9 and other.calls == 2      # other device


@pytest.mark.parametrize("damage", ["array", "record", "torch", "missing-record"])
def test_a_torn_stale_or_foreign_entry_is_painted_again(damage):
    R.cached_reference(SHA, "cpu", Painter())
    folder = R.entry_folder(SHA, "cpu")
    array, record = folder / R.ARRAY_NAME, folder / R.RECORD_NAME
    if damage == "array":      # a different array under the record (an interleaved second writer)
        np.save(array, np.zeros((PROBE_IMAGES, 3, 4, 4), np.uint8))
    elif damage == "record":
        record.write_text("{not json")
    elif damage == "torch":    # written by another torch version
        data = json.loads(record.read_text())
        data["inputs"]["torch"] = "0.0"
        record.write_text(json.dumps(data))
    else:
        record.unlink()
    paint = Painter(5)
    assert R.cached_reference(SHA, "cpu", paint)[0, 0, 0, 0] == 5 and paint.calls == 1
    assert R.cached_reference(SHA, "cpu", paint)[0, 0, 0, 0] == 5 and paint.calls == 1  # rewritten


def test_a_cache_that_cannot_be_written_is_no_error(private_cache, tmp_path, monkeypatch):
    """Kept in the temp folder that replaces the cache (as graphs are); painted each time, with no
    error, when that cannot be written either."""
    from fpa_export.runtime import cache

    private_cache.parent.mkdir(parents=True, exist_ok=True)
    private_cache.write_text("a file where the cache folder should be")
    monkeypatch.setattr(cache.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    paint = Painter()
    assert R.cached_reference(SHA, "cpu", paint).shape[0] == PROBE_IMAGES
    assert R.cached_reference(SHA, "cpu", paint).shape[0] == PROBE_IMAGES and paint.calls == 1
    assert list((tmp_path / "tmp").glob(f"fpa-export-cache-*/{SHA[:20]}-probe-cpu-*/{R.ARRAY_NAME}"))
    (tmp_path / "tmp").rename(tmp_path / "moved")
    (tmp_path / "tmp").write_text("no folder here either")
    assert R.cached_reference(SHA, "cpu", paint).shape[0] == PROBE_IMAGES and paint.calls == 2
    assert R.cached_reference(SHA, "cpu", paint).shape[0] == PROBE_IMAGES and paint.calls == 3


def test_a_bf16_sampler_paints_the_fp32_reference_only_on_its_first_run(tmp_path, monkeypatch):
    import torch

    from fpa_export.models import save_checkpoint
    from fpa_export.runtime import factory, make_sampler
    from fpa_export.runtime import precision as P
    from tests.conftest import make_generator

    monkeypatch.setattr(P, "cpu_bf16_flags", lambda: ("avx512_bf16",))  # torch computes bf16 anyway
    path = save_checkpoint(tmp_path / "m.pt", make_generator(5))
    painted = []
    real = factory.paint_reference
    monkeypatch.setattr(factory, "paint_reference", lambda sampler: painted.append(1) or real(sampler))
    first = make_sampler(path, precision="bf16")
    copy = tmp_path / "renamed.pt"
    copy.write_bytes(path.read_bytes())          # the same weights under another name: kept by content
    second = make_sampler(copy, precision="bf16")
    assert len(painted) == 1
    assert first.precision_record == second.precision_record
    assert first.precision_record["probe"]["images"] == PROBE_IMAGES
    reference = R.cached_reference(_sha256(path), "cpu", lambda: pytest.fail("should be cached"))
    fp32 = make_sampler(path, backend="torch")
    assert torch.equal(torch.as_tensor(reference), P.paint_reference(fp32))


def _sha256(path):
    from fpa_export.runtime.digest import file_sha256

    return file_sha256(path)
