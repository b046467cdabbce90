"""Checkpoint format: round trip, strict validation with one-line errors, no code execution on load."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fpa_export
from fpa_export.models import CheckpointError, load_checkpoint, make_checkpoint, read_checkpoint, save_checkpoint
from tests.conftest import make_generator


@pytest.fixture
def saved(tmp_path, tiny_variant):
    _, changes = tiny_variant
    gen = make_generator(seed=3, **changes)
    path = save_checkpoint(tmp_path / "model.pt", gen, step=7, metrics={"fd": 1.5})
    return gen, path


def assert_one_line(err: pytest.ExceptionInfo, *fragments: str):
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_round_trip_is_bit_identical(saved):
    gen, path = saved
    loaded = fpa_export.load_generator(path)
    z = torch.randn(4, gen.latent_size)
    assert torch.equal(loaded(z), gen(z))
    assert loaded.config == gen.config and not loaded.training
    ckpt = read_checkpoint(path)
    assert ckpt["step"] == 7 and ckpt["metrics"] == {"fd": 1.5} and ckpt["kind"] == "fpa_generator"


def test_default_model_loads():
    gen = fpa_export.load_generator()
    images = gen(torch.randn(2, gen.latent_size))
    assert images.shape == (2, gen.config.channels, gen.config.image_size, gen.config.image_size)


def test_file_is_a_plain_weights_only_dict(saved):
    _, path = saved
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw["config"], dict) and all(isinstance(v, torch.Tensor) for v in raw["state_dict"].values())


def test_truncated_file(saved, tmp_path):
    _, path = saved
    data = path.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert_one_line(err, "truncated.pt", "truncated or corrupted")


def test_random_bytes(tmp_path):
    bad = tmp_path / "noise.pt"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert_one_line(err, "noise.pt")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "absent.pt")
    assert_one_line(err, "no such file")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert_one_line(err, "directory")


def test_wrong_kind(tmp_path):
    ckpt = make_checkpoint(make_generator())
    ckpt["kind"] = "discriminator"
    torch.save(ckpt, tmp_path / "d.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "d.pt")
    assert_one_line(err, "kind is 'discriminator'")


def test_missing_top_level_key(tmp_path):
    ckpt = make_checkpoint(make_generator())
    del ckpt["config"]
    torch.save(ckpt, tmp_path / "m.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "m.pt")
    assert_one_line(err, "missing key(s): config")


def test_missing_state_dict_key(tmp_path):
    ckpt = make_checkpoint(make_generator())
    del ckpt["state_dict"]["kvb.bias"]
    torch.save(ckpt, tmp_path / "m.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "m.pt")
    assert_one_line(err, "missing key(s): kvb.bias")


def test_wrong_shape(tmp_path):
    ckpt = make_checkpoint(make_generator())
    ckpt["state_dict"]["kvb.weight"] = torch.zeros(5, 5)
    torch.save(ckpt, tmp_path / "m.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "m.pt")
    assert_one_line(err, "state_dict['kvb.weight'] has shape (5, 5)", "expects (51, 16)")


def test_official_checkpoint_is_pointed_to_the_converter(tmp_path):
    torch.save({"GAN": {}, "version": "0.23.3"}, tmp_path / "model_0.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "model_0.pt")
    assert_one_line(err, "fpa-convert")


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_executing_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    _Exploit.marker = marker
    bad = tmp_path / "evil.pt"
    ckpt = make_checkpoint(make_generator())
    ckpt["payload"] = _Exploit()
    torch.save(ckpt, bad)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad)
    assert_one_line(err, "refused")
    assert not marker.exists()
    # Sanity check of the test itself: unpickling without the guard really would run the code.
    with open(bad, "rb"):
        torch.load(bad, weights_only=False)
    assert marker.exists()


def test_save_is_atomic_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    gen = make_generator()
    path = save_checkpoint(tmp_path / "model.pt", gen)
    before = path.read_bytes()

    def broken_save(obj, handle):
        handle.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(path, make_generator(seed=1))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temp file left behind
    assert (path.stat().st_mode & 0o777) != 0o600  # usual permissions, not mkstemp's


def test_load_generator_in_a_fresh_process(saved):
    gen, path = saved
    code = ("import sys, torch, fpa_export; g = fpa_export.load_generator(sys.argv[1]); "
            "torch.manual_seed(0); print(g(torch.randn(2, g.latent_size)).sum().item())")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    torch.manual_seed(0)
    # a sum over many float32 values: thread counts may change the summation order (~1e-7 relative)
    assert float(out.stdout) == pytest.approx(gen(torch.randn(2, gen.latent_size)).sum().item(), rel=1e-5)
