"""What the one checkpoint loader refuses, quickly and in one line: files of other kinds (by their first
bytes), configs that are mistyped or too large to allocate, meta/sparse and NaN/inf tensors; and a
checkpoint write that fails on a full disk."""
from __future__ import annotations

import io
import errno
import time

import pytest
import torch
from click.testing import CliRunner

from fpa_export.models import CheckpointError, FPAConfig, load_checkpoint, make_checkpoint, save_checkpoint
from fpa_export.models.config import ConfigError
from tests.conftest import make_generator, tiny_config, tiny_unet_config


def one_line(err, *parts):
    text = str(err.value)
    assert "\n" not in text
    for part in parts:
        assert part in text, text


def onnx_bytes() -> bytes:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["z"], ["image"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])])
    return helper.make_model(graph, producer_name="pytorch").SerializeToString()


@pytest.mark.parametrize("name", ["graph.onnx", "renamed.pt"])
def test_an_onnx_file_is_named_as_such_with_what_to_pass_instead(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(onnx_bytes())
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    one_line(err, "ONNX graph", "pass the .pt checkpoint")
    assert "could run code" not in str(err.value)


def test_other_file_kinds_are_named(tmp_path):
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "x.json").write_text('{"image_size": 32}')
    np.savez(tmp_path / "stats.npz", mu=np.zeros(3))
    for file, kind in (("x.png", "PNG image"), ("x.json", "JSON"), ("stats.npz", "numpy .npz")):
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(tmp_path / file)
        one_line(err, kind)


def test_cli_commands_name_an_onnx_file_given_as_a_checkpoint(tmp_path):
    from fpa_export.cli.export import main as export_main
    from fpa_export.training.cli import main as train_main

    path = tmp_path / "x.onnx"
    path.write_bytes(onnx_bytes())
    for main, args in ((export_main, ["onnx", str(path)]),
                       (train_main, ["unet", "--from", str(path), "--out", str(tmp_path / "u")])):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "ONNX graph" in result.output, result.output
        errors = [line for line in result.output.replace("\r", "\n").splitlines() if line.startswith("Error")]
        assert "Traceback" not in result.output and len(errors) == 1


def saved_with(tmp_path, **config_changes):
    ckpt = make_checkpoint(make_generator())
    ckpt["config"].update(config_changes)
    torch.save(ckpt, tmp_path / "m.pt")
    return tmp_path / "m.pt"


@pytest.mark.parametrize("changes, message", [
    (dict(hidden_size=1e7), "hidden_size must be an integer"),
    (dict(hidden_size=10_000_000), "hidden_size must be between"),
    (dict(hidden_size=60_000), "parameters"),
    (dict(image_size="32"), "image_size must be an integer"),
    (dict(image_size=32.5), "image_size must be an integer"),
    (dict(image_size=1_000_000), "image_size must be between"),
    (dict(image_size=4096, num_steps=20_000), "GiB of activations"),
    (dict(num_steps=10 ** 9), "num_steps must be between"),
    (dict(key_softmax=1), "key_softmax must be true or false"),
    (dict(unet={"channels": 3, "dim": 10 ** 6}), "unet.dim must be between"),
    (dict(unet={"channels": 3, "dim": 8, "dim_mults": ["1", "2"]}), "unet.dim_mults must be an integer"),
    (dict(unet={"channels": 3, "dim": 6, "dim_mults": [1, 2]}), "divisible by resnet_groups"),
])
def test_bad_configs_fail_fast_in_one_line_before_allocation(tmp_path, changes, message):
    path = saved_with(tmp_path, **changes)
    began = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert time.perf_counter() - began < 1.0
    one_line(err, "invalid config", message)


def test_the_size_estimate_is_close_to_the_real_parameter_count():
    from fpa_export.models import FPAGenerator
    from fpa_export.models.config import estimate

    for config in (FPAConfig(), tiny_config(input_generator="v1", wide_out_dim=12, num_layers=2),
                   tiny_config(unet=tiny_unet_config())):
        real = sum(p.numel() for p in FPAGenerator(config).parameters())
        assert 0.5 * real < estimate(config)[0] < 2.0 * real


def test_config_types_are_checked_on_construction_too():
    with pytest.raises(ConfigError, match="latent_size must be an integer"):
        tiny_config(latent_size=True)
    import numpy as np
    assert tiny_config(latent_size=np.int64(8)).latent_size == 8  # numpy integers are integers


@pytest.mark.parametrize("kind", ["meta", "sparse", "nan", "inf"])
def test_meta_sparse_and_non_finite_tensors_are_refused_naming_the_tensor(tmp_path, kind):
    ckpt = make_checkpoint(make_generator())
    weight = ckpt["state_dict"]["kvb.weight"]
    if kind == "meta":
        weight = torch.empty(weight.shape, device="meta")
    elif kind == "sparse":
        weight = weight.to_sparse()
    else:
        weight = weight.clone()
        weight[0, 0] = float(kind)
    ckpt["state_dict"]["kvb.weight"] = weight
    torch.save(ckpt, tmp_path / "m.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "m.pt")
    one_line(err, "kvb.weight", {"meta": "meta", "sparse": "sparse", "nan": "NaN/inf", "inf": "NaN/inf"}[kind])


def test_huge_but_finite_weights_load_even_when_their_sum_overflows(tmp_path):
    """The finite check sums each tensor first; a sum that overflows to inf must not refuse weights
    that are all finite (the element test decides), and +inf and -inf that cancel to NaN are refused."""
    ckpt = make_checkpoint(make_generator())
    weight = ckpt["state_dict"]["kvb.weight"].clone()
    weight[0, :4] = 3e38  # finite in fp32, their sum is not
    ckpt["state_dict"]["kvb.weight"] = weight
    torch.save(ckpt, tmp_path / "huge.pt")
    assert torch.equal(load_checkpoint(tmp_path / "huge.pt")[0].state_dict()["kvb.weight"], weight)
    weight = weight.clone()
    weight[0, :2] = torch.tensor([float("inf"), float("-inf")])
    ckpt["state_dict"]["kvb.weight"] = weight
    torch.save(ckpt, tmp_path / "cancel.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "cancel.pt")
    one_line(err, "kvb.weight", "2 NaN/inf")


def test_a_changed_byte_in_the_stored_weights_is_refused_not_loaded(tmp_path):
    """torch reads zip members without their CRC-32: unchecked, the flipped byte below loads as a
    silently different weight."""
    path = save_checkpoint(tmp_path / "good.pt", make_generator())
    data = bytearray(path.read_bytes())
    data[data.find(b"data/0") + 200] ^= 0xFF  # inside the first tensor's bytes
    (tmp_path / "bad.pt").write_bytes(bytes(data))
    loaded = torch.load(tmp_path / "bad.pt", weights_only=True)["state_dict"]
    original = torch.load(path, weights_only=True)["state_dict"]
    assert any(not torch.equal(loaded[k], original[k]) for k in original)  # what torch alone would do
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "bad.pt")
    one_line(err, "bad.pt: damaged: ", "fails its CRC-32 check")
    load_checkpoint(path)  # the sound file still loads


def test_disk_full_while_saving_is_one_line_and_the_old_checkpoint_is_intact(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "latest.pt", make_generator())
    before = path.read_bytes()
    real_fdopen = __import__("os").fdopen

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr("os.fdopen", lambda fd, mode="r": FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(path, make_generator(seed=1))
    one_line(err, "latest.pt", "No space left on device", "intact")
    assert isinstance(err.value, OSError)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_disk_filling_part_way_through_the_checkpoint_is_one_line(tmp_path, monkeypatch):
    """A disk that fills after a few hundred bytes, behind a buffered file (as a real one is): torch's
    zip writer, writing into such a file itself, fails with a RuntimeError, not an OSError."""
    path = save_checkpoint(tmp_path / "latest.pt", make_generator())
    before = path.read_bytes()
    real_fdopen = __import__("os").fdopen

    class FillsUp(io.RawIOBase):
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def writable(self):
            return True

        def write(self, data):
            if self.written + len(data) > 300:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(data)
            return self.handle.write(data)

        def fileno(self):
            return self.handle.fileno()

        def close(self):
            self.handle.close()
            super().close()

    monkeypatch.setattr("os.fdopen", lambda fd, mode="r": io.BufferedWriter(
        FillsUp(real_fdopen(fd, mode, buffering=0)), buffer_size=256))
    with pytest.raises(CheckpointError) as err:
        save_checkpoint(path, make_generator(seed=1))
    one_line(err, "latest.pt", "No space left on device", "intact")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]
