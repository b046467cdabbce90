"""fpa-convert (docs/MODEL.md §7): files in the official key layout convert back bit-exactly, the converted
models match an independent re-statement of the official forward pass, and every contradiction or
malformed input ends in a one-line error."""
from __future__ import annotations

import argparse
import hashlib

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from fpa_export import load_generator
from fpa_export.cli.convert import main
from fpa_export.convert.keys import (from_official_state_dict, official_generator_state_dict,
                                    to_official_state_dict)
from fpa_export.models import FPAConfig, FPAGenerator, UNetConfig, read_checkpoint, save_checkpoint
from tests.official_builders import save_official_checkpoint
from tests.conftest import make_generator, tiny_unet_config
from tests.test_unet import ref_unet  # float64-style functional U-Net on the official key names

UNET_ARGS = ["--unet-groups", "4", "--unet-heads", "2", "--unet-dim-head", "4"]  # the tiny U-Net
SWITCHES = dict(key_softmax=False, value_tanh=True, lr_sigmoid=False, input_tanh=False, out_tanh=False)
SWITCH_ARGS = ["--no-key-softmax", "--value-tanh", "--no-lr-sigmoid", "--no-input-tanh", "--no-out-tanh"]

# name: (config changes, extra command-line arguments)
VARIANTS = {
    "v2": ({}, []),
    "v1": (dict(input_generator="v1"), ["--steps", "4"]),
    "grey": (dict(channels=1), []),
    "v2_16_steps": (dict(num_steps=16), []),
    "v2_64_steps": (dict(num_steps=64, mini_latent_size=8), []),
    "v1_64_steps": (dict(input_generator="v1", num_steps=64), ["--steps", "64"]),
    "v2_unet": (dict(unet=tiny_unet_config(3)), UNET_ARGS),
    "v1_unet": (dict(input_generator="v1", unet=tiny_unet_config(3)), ["--steps", "4"] + UNET_ARGS),
    "grey_unet_no_tanh": (dict(channels=1, out_tanh=False,
                               unet=UNetConfig(channels=1, dim=8, dim_mults=(1, 2, 4), pre_tanh=False,
                                               resnet_groups=4, attn_heads=2, attn_dim_head=4)),
                          ["--no-out-tanh", "--no-unet-tanh"] + UNET_ARGS),
    "unet_official_widths": (dict(image_size=16, unet=UNetConfig(channels=3, dim=16)), []),
    "v2_extras": (dict(step_embedding=True, wide_out_dim=12, lr_per_row=True, latent_to_init=False,
                       num_layers=2), []),
    "v1_extras": (dict(input_generator="v1", step_embedding=True, wide_out_dim=12, lr_per_row=True),
                  []),
    "switches": (SWITCHES, SWITCH_ARGS),
}


def lively(generator: FPAGenerator, seed: int = 1) -> FPAGenerator:
    """Jitter every weight (norm gains, biases) and enlarge kvb, so images are far from flat. The
    U-Net gets a small jitter: a large one makes its activations explode (outputs in the 1000s)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in generator.named_parameters():
            param.add_((0.02 if name.startswith("unet.") else 0.2) * torch.randn_like(param))
        generator.kvb.weight.mul_(3.0)
    return generator


def variant_generator(name: str, seed: int = 0) -> FPAGenerator:
    return lively(make_generator(seed, **VARIANTS[name][0]), seed + 1)


def convert(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    if ok:
        assert result.exit_code == 0, result.output
    return result


def assert_one_line_error(result, *fragments: str):
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def same_model(config: FPAConfig, expected: FPAConfig) -> bool:
    if expected.input_generator == "v1":  # the v2-only sizes are free in a v1 config
        config = config.replace(mini_latent_size=1, input_size=1)
        expected = expected.replace(mini_latent_size=1, input_size=1)
    return config == expected


# ---------------------------------------------------------------- an independent official forward

def official_forward(sd: dict, z: torch.Tensor, cfg: FPAConfig) -> torch.Tensor:
    """The official generators' forward (IDSIA/fpainter painter.py), restated on official key names:
    a sequence-first LSTM written gate by gate, then the explicit S×S delta-rule loop with bmm."""
    batch, channels, size, steps = z.shape[0], cfg.channels, cfg.image_size, cfg.num_steps
    layers, hidden, r = cfg.num_layers, cfg.hidden_size, cfg.image_size if cfg.lr_per_row else 1
    if "latent_to_init.weight" in sd:
        h0, c0 = F.linear(z, sd["latent_to_init.weight"], sd["latent_to_init.bias"]).split(
            layers * hidden, dim=-1)
        h0, c0 = (s.reshape(batch, layers, hidden).transpose(0, 1) for s in (h0, c0))
    else:
        h0 = c0 = z.new_zeros(layers, batch, hidden)
    if "input_generator.weight" in sd:
        x = F.linear(z, sd["input_generator.weight"], sd["input_generator.bias"])
        x = torch.tanh(x) if cfg.input_tanh else x
        x = F.linear(x.view(batch, steps, -1), sd["per_time_linear_input.weight"],
                     sd["per_time_linear_input.bias"]).transpose(0, 1)  # (T, B, e)
    else:
        x = z.unsqueeze(0).expand(steps, -1, -1)  # (T, B, d)
    if "decoder_time_enc" in sd:
        x = x + sd["decoder_time_enc"].unsqueeze(1)
    for layer in range(layers):
        h, c, outputs = h0[layer], c0[layer], []
        w_ih, w_hh = sd[f"decoder_rnn.weight_ih_l{layer}"], sd[f"decoder_rnn.weight_hh_l{layer}"]
        bias = sd[f"decoder_rnn.bias_ih_l{layer}"] + sd[f"decoder_rnn.bias_hh_l{layer}"]
        for t in range(steps):
            i, f, g, o = (x[t] @ w_ih.T + h @ w_hh.T + bias).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        x = torch.stack(outputs)  # (T, B, H)
    if "wide_net.0.weight" in sd:
        x = torch.relu(F.linear(x, sd["wide_net.0.weight"], sd["wide_net.0.bias"]))
    x = F.linear(x, sd["kvb_net.weight"], sd["kvb_net.bias"])  # (T, B, C·(2S + r))
    canvas = None
    for t in range(steps):
        key, value, lr = x[t].split([channels * size, channels * size, channels * r], dim=-1)
        key, value, lr = key.reshape(-1, size), value.reshape(-1, size), lr.reshape(-1, r)
        value = torch.tanh(value) if cfg.value_tanh else value
        lr = torch.sigmoid(lr) if cfg.lr_sigmoid else lr
        key = torch.softmax(key, dim=-1) if cfg.key_softmax else key
        if canvas is not None:
            retrieved = torch.bmm(canvas.reshape(-1, size, size), key.unsqueeze(2))[:, :, 0]
            value = lr * (value - retrieved)
        update = torch.bmm(value.unsqueeze(2), key.unsqueeze(1)).view(batch, channels, size, size)
        canvas = update if canvas is None else canvas + update
    if cfg.unet is not None:
        canvas = torch.tanh(canvas) if cfg.unet.pre_tanh else canvas
        canvas = ref_unet({k[len("u_net."):]: v for k, v in sd.items() if k.startswith("u_net.")},
                          canvas, cfg.unet)
    return torch.tanh(canvas) if cfg.out_tanh else canvas


def official_generator_tensors(path, prefix="GE.") -> dict:
    gan = torch.load(path, weights_only=True)["GAN"]
    return {k[len(prefix):]: v for k, v in gan.items()
            if k.startswith(prefix) and not k[len(prefix):].startswith("mod_dict.")}


# ---------------------------------------------------------------- round trips and the reference

@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_official_file_converts_back_bit_exactly(tmp_path, name):
    generator = variant_generator(name)
    official = save_official_checkpoint(tmp_path / "model_0.pt", generator)
    convert(official, "-o", tmp_path / "ours.pt", *VARIANTS[name][1])
    converted = load_generator(tmp_path / "ours.pt")
    assert same_model(converted.config, generator.config)
    z = torch.randn(3, generator.latent_size)
    with torch.no_grad():
        assert torch.equal(converted(z), generator(z))
        expected = official_forward(official_generator_tensors(official), z, generator.config)
        # 1e-5 on tanh outputs; relative to the largest value for the variants without the final tanh
        assert (converted(z) - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max())
        assert expected.std() > 0.1  # a reference of near-flat images would prove little


def test_batch_of_one_greyscale_matches_the_reference(tmp_path):
    generator = variant_generator("grey")
    official = save_official_checkpoint(tmp_path / "model_0.pt", generator)
    convert(official, "-o", tmp_path / "ours.pt")
    z = torch.randn(1, generator.latent_size)  # B·C = 1: the official .squeeze() corner
    with torch.no_grad():
        expected = official_forward(official_generator_tensors(official), z, generator.config)
        assert (load_generator(tmp_path / "ours.pt")(z) - expected).abs().max() <= 1e-5


def test_paper_configuration(tmp_path):
    """The CelebA model of the paper: every size is inferred, the switches are the defaults."""
    torch.manual_seed(0)
    generator = FPAGenerator(FPAConfig()).eval()
    with torch.no_grad():
        generator.kvb.weight.mul_(20.0)  # leave the near-flat initial images
    official = save_official_checkpoint(tmp_path / "model_1.pt", generator, optimizer_state=False)
    result = convert(official, "-o", tmp_path / "celeba.pt")
    assert "64×64×3, 64 steps, hidden 1024" in result.output
    converted = load_generator(tmp_path / "celeba.pt")
    assert converted.config == FPAConfig()
    assert sum(p.numel() for p in converted.parameters()) == 6_437_891
    z = torch.randn(2, 512)
    with torch.no_grad():
        expected = official_forward(official_generator_tensors(official), z, FPAConfig())
        assert (converted(z) - expected).abs().max() <= 1e-5 and expected.std() > 0.1


def test_ema_weights_by_default_raw_weights_on_request(tmp_path):
    ema, raw = variant_generator("v2", seed=0), variant_generator("v2", seed=5)
    official = save_official_checkpoint(tmp_path / "model_0.pt", ema, raw_generator=raw)
    convert(official, "-o", tmp_path / "ema.pt")
    convert(official, "-o", tmp_path / "raw.pt", "--weights", "G")
    z = torch.randn(2, ema.latent_size)
    with torch.no_grad():
        assert torch.equal(load_generator(tmp_path / "ema.pt")(z), ema(z))
        assert torch.equal(load_generator(tmp_path / "raw.pt")(z), raw(z))
        assert not torch.equal(ema(z), raw(z))
    assert read_checkpoint(tmp_path / "raw.pt")["source"]["weights"] == "G"


def test_source_record(tmp_path):
    official = save_official_checkpoint(tmp_path / "model_1.pt", variant_generator("v2"))
    convert(official, "-o", tmp_path / "ours.pt")
    source = read_checkpoint(tmp_path / "ours.pt")["source"]
    assert source["file"] == "model_1.pt"
    assert source["sha256"] == hashlib.sha256(official.read_bytes()).hexdigest()
    assert source["model_type"] == "lstm_delta_split_v2" and source["official_version"] == "0.23.3"
    assert source["options"]["steps"] == 4 and source["options"]["key_softmax"] is True


# ---------------------------------------------------------------- the key layout

def test_mapping_round_trip_and_mod_dict_aliases():
    generator = make_generator(0, unet=tiny_unet_config(3))
    official = to_official_state_dict(generator, prefix="GE.")
    # The official V2 U-Net model lists latent_to_init, input_generator, per_time_linear_input,
    # decoder_rnn, kvb_net in mod_dict['base'] and u_net in mod_dict['unet'], the same tensors again.
    assert official["GE.mod_dict.base.0.weight"] is official["GE.latent_to_init.weight"]
    assert official["GE.mod_dict.base.2.bias"] is official["GE.per_time_linear_input.bias"]
    assert official["GE.mod_dict.base.3.weight_hh_l0"] is official["GE.decoder_rnn.weight_hh_l0"]
    assert official["GE.mod_dict.base.4.weight"] is official["GE.kvb_net.weight"]
    assert official["GE.mod_dict.unet.0.init_conv.weight"] is official["GE.u_net.init_conv.weight"]
    ours, unknown = from_official_state_dict(official, prefix="GE.")
    assert unknown == [] and ours.keys() == generator.state_dict().keys()
    assert all(torch.equal(ours[k], v) for k, v in generator.state_dict().items())
    without_init = official_generator_state_dict(make_generator(0, latent_to_init=False,
                                                                unet=tiny_unet_config(3)))
    assert without_init["mod_dict.base.0.weight"] is without_init["input_generator.weight"]


# ---------------------------------------------------------------- contradictions, malformed files

def edited(tmp_path, name="v2", seed=0, **changes):
    """An official file of variant `name` with GAN entries replaced (None deletes them)."""
    path = save_official_checkpoint(tmp_path / "model_0.pt", variant_generator(name, seed))
    ckpt = torch.load(path, weights_only=True)
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            ckpt["GAN"].pop(key)
        else:
            ckpt["GAN"][key] = value
    torch.save(ckpt, path)
    return path


def without_raw_generator(tmp_path):
    path = save_official_checkpoint(tmp_path / "m.pt", variant_generator("v2"))
    ckpt = torch.load(path, weights_only=True)
    ckpt["GAN"] = {k: v for k, v in ckpt["GAN"].items() if not k.startswith("G.")}
    torch.save(ckpt, path)
    return path


CONTRADICTIONS = {
    # name: (file maker, arguments, fragments of the one-line error)
    "steps_v2": (lambda p: save_official_checkpoint(p / "m.pt", make_generator(
        0, num_steps=64, mini_latent_size=8)), ["--steps", "16"],
        ["--steps 16", "GE.input_generator.weight (512×8)", "512 outputs with mini-latent 8",
         "64 steps"]),
    "steps_v1_embedding": (lambda p: save_official_checkpoint(p / "m.pt", make_generator(
        0, input_generator="v1", step_embedding=True)), ["--steps", "8"],
        ["--steps 8", "GE.decoder_time_enc (4×8)"]),
    "v1_type_on_v2": (lambda p: edited(p), ["--model-type", "lstm_delta"],
                      ["--model-type lstm_delta", "GE.input_generator.weight"]),
    "v2_type_on_v1": (lambda p: edited(p, "v1"), ["--model-type", "lstm_delta_split_v2"],
                      ["--model-type lstm_delta_split_v2", "input_generator.weight"]),
    "unet_type_without_unet": (lambda p: edited(p), ["--model-type", "lstm_delta_split_v2_unet"],
                               ["--model-type lstm_delta_split_v2_unet", "u_net"]),
    "plain_type_with_unet": (lambda p: edited(p, "v2_unet"), ["--model-type", "lstm_delta_split_v2"],
                             ["--model-type lstm_delta_split_v2", "u_net"]),
    "image_size": (lambda p: edited(p), ["--image-size", "16"],
                   ["--image-size 16", "GE.kvb_net.weight (51×16)", "8×8×3"]),
    "channels": (lambda p: edited(p), ["--channels", "1"], ["--channels 1", "GE.kvb_net.weight"]),
    "unet_width": (lambda p: edited(p, "v2_unet"), [], ["--unet-heads 4", "to_qkv.weight"]),
    "missing_key": (lambda p: edited(p, GE__kvb_net__bias=None), [],
                    ["missing key(s)", "GE.kvb_net.bias"]),
    "missing_lstm": (lambda p: edited(p, GE__decoder_rnn__weight_hh_l0=None), [],
                     ["missing key(s)", "GE.decoder_rnn.weight_hh_l0"]),
    "unknown_key": (lambda p: edited(p, GE__extra_head__weight=torch.zeros(2)), [],
                    ["unknown key(s)", "GE.extra_head.weight", "--no-strict"]),
    "learned_init": (lambda p: edited(p, "v1", GE__learned_init=torch.zeros(3, 8, 8)),
                     ["--steps", "4"], ["GE.learned_init", "--use_learned_init"]),
    "wrong_shape": (lambda p: edited(p, GE__kvb_net__bias=torch.zeros(50)), [],
                    ["GE.kvb_net.bias (50)", "51"]),
    "integer_tensor": (lambda p: edited(p, GE__kvb_net__bias=torch.zeros(51, dtype=torch.long)), [],
                       ["GE.kvb_net.bias is torch.int64"]),
    "no_raw_weights": (lambda p: without_raw_generator(p), ["--weights", "G"], ["no 'G.' tensors"]),
    # tensors of the wrong rank: one line naming the tensor, not an unpacking traceback
    "kvb_3d": (lambda p: edited(p, GE__kvb_net__weight=torch.zeros(1, 51, 16)), [],
               ["GE.kvb_net.weight (1×51×16) is 3-D", "2-D"]),
    "kvb_0d": (lambda p: edited(p, GE__kvb_net__weight=torch.tensor(1.0)), [], ["GE.kvb_net.weight () is 0-D"]),
    "lstm_3d": (lambda p: edited(p, GE__decoder_rnn__weight_hh_l0=torch.zeros(1, 2, 2)), [],
                ["GE.decoder_rnn.weight_hh_l0 (1×2×2) is 3-D"]),
    "unet_conv_flat": (lambda p: edited(p, "v2_unet", GE__u_net__init_conv__weight=torch.zeros(7)), [],
                       ["GE.u_net.init_conv.weight (7) is 1-D", "at least 2-D"]),
    # weights no command would load: refused here, nothing written
    "non_finite": (lambda p: edited(p, GE__kvb_net__bias=torch.full((51,), float("nan"))), [],
                   ["GE.kvb_net.bias holds 51 NaN/inf", "nothing written"]),
    # an option this model has no use for is an error, not silently dropped
    "unet_option_without_unet": (lambda p: edited(p), ["--unet-heads", "2"],
                                 ["--unet-heads applies only to a model with a U-Net"]),
    "input_tanh_on_v1": (lambda p: edited(p, "v1"), ["--steps", "4", "--no-input-tanh"],
                         ["--no-input-tanh applies only to a model with the v2 input generator"]),
}


@pytest.mark.parametrize("name", sorted(CONTRADICTIONS))
def test_contradictions_and_bad_keys_are_one_line_errors(tmp_path, name):
    make, args, fragments = CONTRADICTIONS[name]
    official = make(tmp_path)
    result = convert(official, "-o", tmp_path / "ours.pt", *args, ok=False)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "ours.pt").exists()


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


MALFORMED = {
    "garbage": (lambda p: _write(p / "m.pt", b"not a checkpoint at all" * 10), ["not a torch checkpoint"]),
    "truncated": (lambda p: _write(p / "m.pt", edited(p).read_bytes()[:3000]), ["truncated or corrupted"]),
    "not_a_dict": (lambda p: _save(p, [1, 2]), ["top level is a list"]),
    "no_gan": (lambda p: _save(p, {"state_dict": {}}), ["no 'GAN' state dict", "state_dict"]),
    "ours": (lambda p: save_checkpoint(p / "m.pt", make_generator(0)), ["already an fpa-export"]),
    # other kinds of file say what they are and what to pass, never "corrupted" or "--trust-pickle"
    "text": (lambda p: _write(p / "m.pt", b"hello\n"), ["unknown file type", "official fpainter model_"]),
    "png": (lambda p: _write(p / "m.onnx", b"\x89PNG\r\n\x1a\n" + bytes(64)), ["a PNG image", "official"]),
    "onnx": (lambda p: _write(p / "m.onnx", b"\x08\x08\x12\x07pytorch" + bytes(32)), ["an ONNX graph"]),
}


def _save(path_dir, obj):
    torch.save(obj, path_dir / "m.pt")
    return path_dir / "m.pt"


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_files_are_one_line_errors(tmp_path, name):
    make, fragments = MALFORMED[name]
    result = convert(make(tmp_path), "-o", tmp_path / "o.pt", ok=False)
    assert_one_line_error(result, *fragments)
    assert "--trust-pickle" not in result.output


@pytest.mark.parametrize("name", ["graph.onnx", "stats.npz", "engine.plan", "noext"])
def test_the_output_is_a_pt_file_so_no_graph_or_statistics_is_written_over(tmp_path, name):
    official = edited(tmp_path)
    (tmp_path / name).write_bytes(b"an earlier export")
    result = convert(official, "-o", tmp_path / name, ok=False)
    assert_one_line_error(result, "a checkpoint is written as .pt or .pth")
    assert (tmp_path / name).read_bytes() == b"an earlier export"


def test_a_device_or_pipe_is_never_replaced_by_the_output(tmp_path):
    import os

    official = edited(tmp_path)
    os.mkfifo(tmp_path / "pipe.pt")
    result = convert(official, "-o", tmp_path / "pipe.pt", ok=False)
    assert_one_line_error(result, "pipe.pt: not a regular file (a device, pipe or socket)")
    assert not (tmp_path / "pipe.pt").is_file() and (tmp_path / "pipe.pt").exists()


def test_output_must_not_overwrite_the_official_file(tmp_path):
    official = edited(tmp_path)
    before = official.read_bytes()
    assert_one_line_error(convert(official, "-o", official, ok=False), "overwrite")
    assert official.read_bytes() == before


def test_no_strict_ignores_unknown_keys_with_a_warning(tmp_path):
    official = edited(tmp_path, GE__extra_head__weight=torch.zeros(2))
    result = convert(official, "-o", tmp_path / "ours.pt", "--no-strict")
    assert "Warning: ignored unknown key(s): GE.extra_head.weight" in result.output
    assert read_checkpoint(tmp_path / "ours.pt")["source"]["options"]["strict"] is False


def test_v1_without_steps_says_what_it_assumed(tmp_path):
    result = convert(edited(tmp_path, "v1"), "-o", tmp_path / "ours.pt")
    assert "Warning: --steps not given" in result.output and "64" in result.output
    assert load_generator(tmp_path / "ours.pt").config.num_steps == 64


# ---------------------------------------------------------------- pickles

class RunsCode:
    """Unpickling this creates a file: stands for any code an untrusted pickle could run."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "code-ran"
    official = edited(tmp_path)
    ckpt = torch.load(official, weights_only=True)
    ckpt["hook"] = RunsCode(marker)
    torch.save(ckpt, official)
    result = convert(official, "-o", tmp_path / "ours.pt", ok=False)
    assert_one_line_error(result, "refused", "--trust-pickle")
    assert not marker.exists() and not (tmp_path / "ours.pt").exists()


def test_trust_pickle_loads_python_objects_with_a_warning(tmp_path):
    official = edited(tmp_path)
    ckpt = torch.load(official, weights_only=True)
    ckpt["args"] = argparse.Namespace(model_type="lstm_delta_split_v2")  # not an allowed global
    torch.save(ckpt, official)
    assert_one_line_error(convert(official, "-o", tmp_path / "ours.pt", ok=False),
                          "refused", "argparse.Namespace", "--trust-pickle")
    result = convert(official, "-o", tmp_path / "ours.pt", "--trust-pickle")
    assert "Warning:" in result.output and "can run any code" in result.output
    z = torch.randn(2, 8)
    with torch.no_grad():
        assert torch.equal(load_generator(tmp_path / "ours.pt")(z), variant_generator("v2")(z))
