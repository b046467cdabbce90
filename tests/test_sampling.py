"""fpa_export.sampling: deterministic, batch/backend/shard-independent, resumable sample folders."""
from __future__ import annotations

import errno
import hashlib
import json

import numpy as np
import pytest
import torch

from fpa_export.models import save_checkpoint
from fpa_export.common.images import to_uint8
from fpa_export.sampling import (FolderMismatch, SampleRun, iter_samples, latents_for, parse_shard,
                                 sample_folder)
from fpa_export.sampling import pipeline
from fpa_export.sampling.imagefiles import SampleFiles, decode, encode
from fpa_export.runtime import make_sampler
from tests.conftest import make_generator

N = 7


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    generator = make_generator(3, channels=1)
    path = save_checkpoint(tmp_path_factory.mktemp("sampling") / "grey.pt", generator)
    return path, generator


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FPA_EXPORT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _run(folder, **options):
    options = {"n": N, "batch_size": 3, "workers": 2, **options}
    return SampleRun(folder, **options)


def _images(folder, n=N, fmt="png"):
    return np.stack([decode(folder / f"{i:06d}.{fmt}") for i in range(n)])


def _reference_image(generator, seed, index):
    """Written from the documented rule, independently of fpa_export.sampling.latents."""
    digest = hashlib.sha256(f"fpa-sample/v1:{seed}:{index}".encode()).digest()
    rng = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
    z = torch.randn(1, generator.latent_size, generator=rng)
    with torch.no_grad():
        return to_uint8(generator(z))[0, 0].numpy()


def test_latents_depend_only_on_seed_and_index():
    together = latents_for([0, 1, 2, 9], seed=5, latent_size=6)
    alone = torch.cat([latents_for([i], seed=5, latent_size=6) for i in (9, 2, 1, 0)]).flip(0)
    assert torch.equal(together, alone)
    assert not torch.equal(latents_for([0], 5, 6), latents_for([0], 6, 6))
    assert not torch.equal(latents_for([0], 5, 6), latents_for([1], 5, 6))
    torch.testing.assert_close(latents_for([3], 5, 6, truncation=0.5), 0.5 * latents_for([3], 5, 6))
    with pytest.raises(ValueError):
        latents_for([0], 5, 6, truncation=0.0)
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) == (0, 1)
    assert parse_shard("env", {"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)
    with pytest.raises(ValueError, match="RANK"):
        parse_shard("env", {})
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_files_match_an_independent_reference_and_the_manifest(model, tmp_path):
    path, generator = model
    report = sample_folder(_run(tmp_path / "a", seed=2), model=path, backend="torch", progress=False)
    assert (report.written, report.skipped) == (N, 0)
    images = _images(tmp_path / "a")
    for index in (0, 4, 6):
        np.testing.assert_array_equal(images[index], _reference_image(generator, 2, index))
    record = json.loads((tmp_path / "a" / "samples.json").read_text())
    assert record["model"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (record["seed"], record["n"], record["image_format"]) == (2, N, "png")
    assert record["backends"] == ["torch-cpu"]


def test_same_files_for_batch_sizes_backends_and_shards(model, tmp_path):
    path, _ = model
    folders = {}
    for batch in (1, 3, 64):
        folders[f"torch-{batch}"] = tmp_path / f"b{batch}"
        sample_folder(_run(folders[f"torch-{batch}"], batch_size=batch), model=path, backend="torch",
                      progress=False)
    for shard in ("0/3", "1/3", "2/3"):
        sample_folder(_run(tmp_path / "sharded", shard=parse_shard(shard)), model=path,
                      backend="torch", progress=False)
    reference = _images(folders["torch-1"])
    for name in ("torch-3", "torch-64"):
        np.testing.assert_array_equal(_images(folders[name]), reference)
    np.testing.assert_array_equal(_images(tmp_path / "sharded"), reference)
    sample_folder(_run(tmp_path / "onnx", batch_size=4), model=path, backend="onnx", progress=False)
    levels = np.abs(_images(tmp_path / "onnx").astype(int) - reference.astype(int))
    assert levels.max() <= 1
    report = sample_folder(_run(tmp_path / "onnx", n=N + 1), model=path, backend="torch", progress=False)
    assert report.written == 1 and report.manifest["backends"] == ["onnxruntime-cpu", "torch-cpu"]


DEAD_PID = 4_194_999  # above Linux's largest pid_max (2**22): never a live process


def test_a_live_writers_temporary_is_left_alone(model, tmp_path):
    """Another process of the same shard is writing it (two runs of one shard both paint identical
    files): only a dead writer's temporaries are removed."""
    import subprocess
    import sys

    path, _ = model
    folder = tmp_path / "live"
    folder.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = folder / f".000002.png.{writer.pid}.tmp"
        live.write_bytes(b"being written")
        sample_folder(_run(folder), model=path, backend="torch", progress=False)
        assert live.exists()
    finally:
        writer.kill()
        writer.wait()
    sample_folder(_run(folder), model=path, backend="torch", progress=False)
    assert not live.exists()


def test_a_killed_writer_not_yet_reaped_is_dead(model, tmp_path):
    """A writer killed while its parent has not waited for it (a zombie: the pid still exists) wrote
    its last byte: its temporary is removed like any dead writer's."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    path, _ = model
    folder = tmp_path / "zombie"
    folder.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        writer.kill()  # not waited for: the process stays a zombie
        stat = Path(f"/proc/{writer.pid}/stat")
        deadline = time.monotonic() + 10
        while stat.exists() and stat.read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        if not stat.exists():
            pytest.skip("no /proc here to tell a zombie")
        left = folder / f".000002.png.{writer.pid}.tmp"
        left.write_bytes(b"cut short")
        sample_folder(_run(folder), model=path, backend="torch", progress=False)
        assert not left.exists() and (folder / "000002.png").exists()
    finally:
        writer.wait()


def test_resume_after_deleted_and_truncated_files(model, tmp_path):
    path, _ = model
    folder = tmp_path / "resume"
    sample_folder(_run(folder), model=path, backend="torch", progress=False)
    before = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    (folder / "000001.png").unlink()
    (folder / "000005.png").unlink()
    data = (folder / "000003.png").read_bytes()
    (folder / "000003.png").write_bytes(data[: len(data) // 2])
    (folder / f".000004.png.{DEAD_PID}.tmp").write_bytes(b"half")  # left by a killed run
    report = sample_folder(_run(folder, batch_size=2), model=path, backend="torch", progress=False)
    assert (report.written, report.skipped, report.regenerated) == (3, N - 3, 1)
    assert {p.name: p.read_bytes() for p in folder.glob("*.png")} == before
    assert not list(folder.glob(".*.tmp"))
    again = sample_folder(_run(folder, n=N + 2), model=path, backend="torch", progress=False)
    assert (again.written, again.skipped) == (2, N)  # a larger --n extends the folder


def test_refuses_another_run_unless_overwrite(model, tmp_path):
    path, _ = model
    folder = tmp_path / "mixed"
    sample_folder(_run(folder, seed=0), model=path, backend="torch", progress=False)
    before = _images(folder)
    other = save_checkpoint(tmp_path / "other.pt", make_generator(4, channels=1))
    for kwargs, options in ((dict(model=path), dict(seed=1)), (dict(model=other), {}),
                            (dict(model=path), dict(image_format="jpg")),
                            (dict(model=path), dict(n=N - 1))):
        with pytest.raises(FolderMismatch):
            sample_folder(_run(folder, **options), backend="torch", progress=False, **kwargs)
    np.testing.assert_array_equal(_images(folder), before)
    report = sample_folder(_run(folder, seed=1, overwrite=True), model=path, backend="torch",
                           progress=False)
    assert report.written == N and not np.array_equal(_images(folder), before)
    (folder / "samples.json").unlink()
    with pytest.raises(FolderMismatch, match="no samples.json"):
        sample_folder(_run(folder, seed=1), model=path, backend="torch", progress=False)


def test_full_disk_keeps_earlier_files_and_resumes(model, tmp_path, monkeypatch):
    path, _ = model
    folder = tmp_path / "full"
    real_write, calls = SampleFiles.write, []

    def write_until_full(files, name, data):
        calls.append(name)
        if len(calls) > 4:
            raise OSError(errno.ENOSPC, "No space left on device", name)
        real_write(files, name, data)

    monkeypatch.setattr(SampleFiles, "write", write_until_full)
    with pytest.raises(OSError) as info:
        sample_folder(_run(folder, workers=1), model=path, backend="torch", progress=False)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(SampleFiles, "write", real_write)
    written = sorted(folder.glob("*.png"))
    assert len(written) == 4 and all(decode(p).shape == (8, 8) for p in written)
    assert not list(folder.glob(".*.tmp"))
    report = sample_folder(_run(folder), model=path, backend="torch", progress=False)
    assert (report.written, report.skipped) == (N - 4, 4)


def test_interrupt_loses_at_most_the_batch_in_flight(model, tmp_path, monkeypatch):
    path, _ = model
    folder = tmp_path / "interrupted"
    real_iter = pipeline.iter_samples

    def interrupted(*args, **kwargs):
        for number, batch in enumerate(real_iter(*args, **kwargs)):
            if number == 2:
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(pipeline, "iter_samples", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sample_folder(_run(folder, n=12, batch_size=3), model=path, backend="torch", progress=False)
    assert sorted(p.name for p in folder.glob("*.png")) == [f"{i:06d}.png" for i in range(6)]
    assert not list(folder.glob(".*.tmp"))


def test_png_encoder_round_trips_through_pillow():
    from PIL import Image
    import io

    rng = np.random.default_rng(0)
    for shape in ((8, 8), (5, 7), (6, 9, 3), (1, 1, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        with Image.open(io.BytesIO(encode(image, "png"))) as pil:
            assert pil.format == "PNG" and pil.mode == ("L" if len(shape) == 2 else "RGB")
            np.testing.assert_array_equal(np.asarray(pil), image)


def test_png_level_stores_exactly_the_images_that_fit_one_block():
    from fpa_export.sampling.imagefiles import PNG_BLOCK, png_level

    rng = np.random.default_rng(1)
    assert (png_level((32, 32)), png_level((64, 64, 3))) == (0, 1)  # the default and the paper model
    for shape in ((32, 32, 3), (36, 36, 3), (37, 37, 3), (62, 62), (63, 63), (64, 64)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)  # noise: compression cannot shrink it
        data = encode(image, "png")
        stored = png_level(shape) == 0
        assert (len(data) <= PNG_BLOCK) == stored, (shape, len(data))
        if stored:
            assert len(data) == shape[0] * (1 + image[0].size) + 68  # no compression at all


def test_jpeg_and_iter_samples(model, tmp_path):
    path, generator = model
    sampler = make_sampler(path, backend="torch")
    (indices, images), = list(iter_samples(sampler, [5, 2], seed=1, batch_size=8))
    assert list(indices) == [5, 2] and images.dtype == np.uint8 and images.shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(images[0, 0], _reference_image(generator, 1, 5))
    sample_folder(_run(tmp_path / "jpg", image_format="jpg", jpeg_quality=90, seed=1), model=path,
                  sampler=sampler, progress=False)
    assert len(list((tmp_path / "jpg").glob("*.jpg"))) == N
    for bad in (dict(n=0), dict(n=-3), dict(batch_size=0), dict(jpeg_quality=0), dict(truncation=2.0)):
        with pytest.raises(ValueError):
            sample_folder(_run(tmp_path / "bad", **bad), model=path, sampler=sampler, progress=False)
    assert not (tmp_path / "bad").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_files_match_cpu_files(model, tmp_path):
    path, _ = model
    sample_folder(_run(tmp_path / "cpu"), model=path, backend="torch", progress=False)
    sample_folder(_run(tmp_path / "gpu"), model=path, backend="torch", device="cuda", progress=False)
    levels = np.abs(_images(tmp_path / "gpu").astype(int) - _images(tmp_path / "cpu").astype(int))
    assert levels.max() <= 1


def test_painting_threads_default_to_the_cores_and_an_explicit_count_wins(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    assert SampleRun("x", n=1).thread_counts() == (4, 4)
    assert SampleRun("x", n=1, threads=3, workers=2).thread_counts() == (3, 2)
    assert SampleRun("x", n=1, threads=99).thread_counts()[0] == 4
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert SampleRun("x", n=1).thread_counts() == (16, 8)


def test_concurrent_painters_give_the_same_images_in_order(model):
    path, _ = model
    sampler = make_sampler(path, backend="torch")
    indices = list(range(23))
    one = list(iter_samples(sampler, indices, seed=4, batch_size=5))
    three = list(iter_samples(sampler, iter(indices), seed=4, batch_size=5, painters=3))
    assert [list(i) for i, _ in one] == [list(i) for i, _ in three] == \
        [indices[k:k + 5] for k in range(0, 23, 5)]
    np.testing.assert_array_equal(np.concatenate([b for _, b in one]),
                                  np.concatenate([b for _, b in three]))


def test_sample_files_write_atomically_and_refuse_after_close(tmp_path):
    with SampleFiles(tmp_path) as files:
        files.write("000001.png", b"one")
        files.write("000001.png", b"two")  # replaced whole
    assert [p.name for p in tmp_path.iterdir()] == ["000001.png"]
    assert (tmp_path / "000001.png").read_bytes() == b"two"
    if not files.by_path:
        with pytest.raises(ValueError, match="after it was closed"):
            files.write("000002.png", b"late")
        assert not (tmp_path / "000002.png").exists()


def test_a_sampler_that_cannot_paint_in_parallel_gets_one_batch_on_every_thread(model, tmp_path,
                                                                                  monkeypatch):
    path, _ = model
    sampler = make_sampler(path, backend="torch")
    sampler.parallel_batches = False
    real_threads, runtime = pipeline.torch_threads, []
    monkeypatch.setattr(pipeline, "torch_threads", lambda n: runtime.append(n) or real_threads(n))
    report = sample_folder(_run(tmp_path / "serial", threads=2), model=path, sampler=sampler,
                           progress=False)
    parallel = sample_folder(_run(tmp_path / "parallel", threads=2), model=path, backend="torch",
                             progress=False)
    threads = SampleRun("x", n=1, threads=2).thread_counts()[0]
    assert runtime == [threads, 1]  # one batch on every painting thread; else one thread per batch
    assert report.written == parallel.written == N
    assert [p.read_bytes() for p in sorted((tmp_path / "serial").glob("*.png"))] == \
        [p.read_bytes() for p in sorted((tmp_path / "parallel").glob("*.png"))]
