"""Reading an official generator's hyper-parameters off its tensor shapes (docs/MODEL.md §7).

The official files store no hyper-parameters, but the shapes fix most of them: H and L from the LSTM,
d, m, T and e from the v2 input layers, S, C and r from the kvb layer's C·(2S + r) outputs, the U-Net's
width and levels from its convolutions. `infer_config` reads them and checks them against each other
and against the user's options; every conflict is a `ConversionError` naming the option and the tensor.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from fpa_export.common.errors import FpaError
from fpa_export.models import FPAConfig, UNetConfig
from fpa_export.models.checkpoint import not_dense
from .keys import is_alias

DEFAULT_STEPS = 64  # the paper's; used only when the file does not determine T (v1 without step embedding)


class ConversionError(FpaError):
    """An official file that cannot be converted as asked; the message is one line."""


class OfficialTensors:
    """The generator tensors under one prefix of the 'GAN' dict, by official name (prefix stripped,
    `mod_dict` aliases dropped); errors name them with the prefix."""

    def __init__(self, gan: Mapping[str, Any], prefix: str, path: Path):
        self.gan, self.prefix, self.path = gan, prefix, path
        self.items = {k[len(prefix):]: v for k, v in gan.items()
                      if isinstance(k, str) and k.startswith(prefix) and not is_alias(k[len(prefix):])}
        if not self.items:
            prefixes = sorted({k.split(".")[0] + "." for k in gan if isinstance(k, str)})
            raise ConversionError(f"{path}: no '{prefix}' tensors in the 'GAN' state dict (prefixes "
                                  f"present: {', '.join(prefixes) or 'none'})")
        for name, value in self.items.items():
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                kind = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
                raise ConversionError(f"{path}: {prefix}{name} is {kind}, not a float tensor")
            kind = not_dense(value)
            if kind:
                raise ConversionError(f"{path}: {prefix}{name} is {kind}; only dense tensors are converted")

    def __contains__(self, name: str) -> bool:
        return name in self.items

    def shape(self, name: str, rank: Optional[int] = None, min_rank: int = 0) -> tuple[int, ...]:
        """The tensor's shape; `rank` (exactly) or `min_rank` (at least) dimensions, else one line."""
        if name not in self.items:
            raise ConversionError(f"{self.path}: missing key: {self.prefix}{name}")
        shape = tuple(self.items[name].shape)
        if (rank is not None and len(shape) != rank) or len(shape) < min_rank:
            wanted = f"{rank}-D" if rank is not None else f"at least {min_rank}-D"
            raise ConversionError(f"{self.path}: {self.label(name)} is {len(shape)}-D; a generator of the "
                                  f"official code has it {wanted}")
        return shape

    def label(self, name: str) -> str:
        return f"{self.prefix}{name} ({'×'.join(map(str, self.shape(name)))})"

    def require(self, names: list[str]) -> None:
        missing = [self.prefix + n for n in names if n not in self.items]
        if missing:
            raise ConversionError(f"{self.path}: missing key(s): {listing(missing)}")


def infer_config(t: OfficialTensors, model_type: Optional[str], steps: Optional[int], options: dict,
                 notes: list[str]) -> tuple[str, FPAConfig]:
    """(model type, FPAConfig) from the tensor shapes and the options; ConversionError on conflicts."""
    model_type = resolve_model_type(t, model_type)
    v2 = model_type.startswith("lstm_delta_split_v2")
    t.require(["decoder_rnn.weight_ih_l0", "decoder_rnn.weight_hh_l0", "kvb_net.weight"]
              + (["input_generator.weight", "per_time_linear_input.weight"] if v2
                 else ["latent_to_init.weight"]))
    four_h, lstm_in = t.shape("decoder_rnn.weight_ih_l0", 2)
    hidden = t.shape("decoder_rnn.weight_hh_l0", 2)[1]
    layers = sum(1 for name in t.items if re.fullmatch(r"decoder_rnn\.weight_hh_l\d+", name))
    if four_h != 4 * hidden:
        raise ConversionError(f"{t.label('decoder_rnn.weight_ih_l0')} does not match the hidden size "
                              f"{hidden} of {t.label('decoder_rnn.weight_hh_l0')}")
    inputs = _input_side(t, v2, steps, lstm_in, notes)
    init_shape = (2 * layers * hidden, inputs["latent_size"])
    if "latent_to_init.weight" in t and t.shape("latent_to_init.weight") != init_shape:
        raise ConversionError(f"{t.label('latent_to_init.weight')} should be "
                              f"{init_shape[0]}×{init_shape[1]} (2·L·H × d)")
    wide = t.shape("wide_net.0.weight", 2)[0] if "wide_net.0.weight" in t else 0
    unet = _unet_config(t, options) if model_type.endswith("_unet") else None
    size, channels, per_row = _canvas(t, wide or hidden, options, unet)
    config = FPAConfig(
        image_size=size, channels=channels, hidden_size=hidden, num_layers=layers,
        input_generator="v2" if v2 else "v1", latent_to_init="latent_to_init.weight" in t,
        step_embedding="decoder_time_enc" in t, wide_out_dim=wide, lr_per_row=per_row,
        key_softmax=options["key_softmax"], value_tanh=options["value_tanh"],
        lr_sigmoid=options["lr_sigmoid"], out_tanh=options["out_tanh"],
        input_tanh=options["input_tanh"], unet=unet, **inputs)
    return model_type, config


def resolve_model_type(t: OfficialTensors, model_type: Optional[str]) -> str:
    """The official model type the keys show; an explicit one must agree with them."""
    v2, unet = "input_generator.weight" in t, any(k.startswith("u_net.") for k in t.items)
    if not v2 and "per_time_linear_input.weight" in t:
        raise ConversionError(f"{t.path}: {t.prefix}per_time_linear_input.weight without "
                              f"{t.prefix}input_generator.weight: the official 'lstm_delta_split' model "
                              "is not supported (or the input generator is missing)")
    found = ("lstm_delta_split_v2" if v2 else "lstm_delta") + ("_unet" if unet else "")
    if model_type is None or model_type == found:
        return found
    if model_type.startswith("lstm_delta_split_v2") != v2:
        why = (f"{t.label('input_generator.weight')} is a v2 input generator, which v1 models lack" if v2
               else f"it expects {t.prefix}input_generator.weight (v2), which the file lacks")
    else:
        why = (f"the file has {t.prefix}u_net.* tensors (a U-Net model)" if unet
               else f"it expects {t.prefix}u_net.* tensors, which the file lacks")
    raise ConversionError(f"--model-type {model_type} contradicts the file: {why}; "
                          f"the keys show {found}")


def _input_side(t: OfficialTensors, v2: bool, steps: Optional[int], lstm_in: int,
                notes: list[str]) -> dict:
    """latent_size, mini_latent_size, input_size and num_steps (FPAConfig fields)."""
    if v2:
        mini_steps, latent = t.shape("input_generator.weight", 2)
        step_in, mini = t.shape("per_time_linear_input.weight", 2)
        if step_in != lstm_in:
            raise ConversionError(f"{t.label('per_time_linear_input.weight')} feeds {step_in} inputs but "
                                  f"{t.label('decoder_rnn.weight_ih_l0')} takes {lstm_in}")
        if mini_steps % mini:
            raise ConversionError(f"{t.label('input_generator.weight')}: {mini_steps} outputs are not a "
                                  f"multiple of the mini-latent size {mini} "
                                  f"({t.label('per_time_linear_input.weight')})")
        num_steps = mini_steps // mini
        if steps is not None and steps != num_steps:
            raise ConversionError(
                f"--steps {steps} contradicts {t.label('input_generator.weight')}: its {mini_steps} "
                f"outputs with mini-latent {mini} ({t.prefix}per_time_linear_input.weight) make "
                f"{num_steps} steps")
        fields = dict(latent_size=latent, mini_latent_size=mini, input_size=step_in)
    else:
        latent = t.shape("latent_to_init.weight", 2)[1]
        if latent != lstm_in:
            raise ConversionError(f"{t.label('decoder_rnn.weight_ih_l0')} takes {lstm_in} inputs, but a "
                                  f"v1 LSTM reads z of size {latent} ({t.label('latent_to_init.weight')})")
        num_steps = steps
        if "decoder_time_enc" in t:
            rows = t.shape("decoder_time_enc", 2)[0]
            if steps is not None and steps != rows:
                raise ConversionError(f"--steps {steps} contradicts {t.label('decoder_time_enc')}: "
                                      f"its {rows} rows are one per step")
            num_steps = rows
        if num_steps is None:
            num_steps = DEFAULT_STEPS
            notes.append(f"--steps not given and a v1 file does not determine it: assumed "
                         f"{DEFAULT_STEPS} (the paper's); pass --steps if the model was trained otherwise")
        fields = dict(latent_size=latent)
    if "decoder_time_enc" in t and t.shape("decoder_time_enc") != (num_steps, lstm_in):
        raise ConversionError(f"{t.label('decoder_time_enc')} should be {num_steps}×{lstm_in} "
                              "(steps × LSTM input size)")
    return dict(fields, num_steps=num_steps)


def _canvas(t: OfficialTensors, kvb_in: int, options: dict, unet: Optional[UNetConfig]):
    """(S, C, lr_per_row) from the kvb layer's C·(2S + r) outputs, r = 1 or S, C = 1 or 3."""
    outputs, width = t.shape("kvb_net.weight", 2)
    if width != kvb_in:
        source = "wide_net.0.weight" if "wide_net.0.weight" in t else "decoder_rnn.weight_hh_l0"
        raise ConversionError(f"{t.label('kvb_net.weight')} reads {width} inputs but "
                              f"{t.label(source)} gives {kvb_in}")
    fits = _canvas_fits(outputs)
    size, channels = options["image_size"], options["channels"]
    rules = []  # (what constrains the canvas, test)
    if size is not None:
        rules.append((f"--image-size {size}", lambda fit: fit[0] == size))
    if channels is not None:
        rules.append((f"--channels {channels}", lambda fit: fit[1] == channels))
    if unet is not None:
        rules.append((f"{t.label('u_net.init_conv.weight')} ({unet.channels} channel(s))",
                      lambda fit: fit[1] == unet.channels))
    candidates = [fit for fit in fits if all(test(fit) for _, test in rules)]
    if size is None:  # the official code trains only power-of-two sizes
        candidates = [fit for fit in candidates if fit[0] & (fit[0] - 1) == 0]
    if len(candidates) == 1:
        return candidates[0]
    shown = ", ".join(map(_describe, fits)) or "no canvas"
    if not candidates and rules:
        verb = "contradict" if len(rules) > 1 else "contradicts"
        raise ConversionError(f"{' and '.join(what for what, _ in rules)} {verb} "
                              f"{t.label('kvb_net.weight')}: {outputs} = C·(2S + r) outputs fit {shown}")
    if not candidates:
        if any(fit[0] & (fit[0] - 1) == 0 for fit in _canvas_fits(outputs, channel_counts=(4,))):
            raise ConversionError(f"{t.label('kvb_net.weight')} fits a 4-channel canvas: RGBA models "
                                  "(official --transparent) are not supported")
        raise ConversionError(f"{t.label('kvb_net.weight')}: {outputs} outputs are not C·(2S + r) for a "
                              "power-of-two S, C = 1 or 3, r = 1 or S; pass --image-size and --channels")
    raise ConversionError(f"{t.label('kvb_net.weight')} fits several canvases ({shown}); pass "
                          "--image-size and --channels")


def _canvas_fits(outputs: int, channel_counts=(3, 1)) -> list[tuple[int, int, bool]]:
    """Every (S, C, per_row) with C·(2S + r) = outputs, S >= 2."""
    fits = []
    for channels in channel_counts:
        per_channel = outputs // channels if outputs % channels == 0 else 0
        if per_channel % 2 == 1 and per_channel >= 5:  # r = 1: 2S + 1
            fits.append(((per_channel - 1) // 2, channels, False))
        if per_channel % 3 == 0 and per_channel >= 6:  # r = S: 3S
            fits.append((per_channel // 3, channels, True))
    return fits


def _describe(fit: tuple[int, int, bool]) -> str:
    size, channels, per_row = fit
    return f"{size}×{size}×{channels}" + (" (a learning rate per row)" if per_row else "")


def _unet_config(t: OfficialTensors, options: dict) -> UNetConfig:
    """The U-Net's dim, levels and multipliers from its convolutions; widths checked against options."""
    dim, channels = t.shape("u_net.init_conv.weight", min_rank=2)[:2]
    levels = sorted({int(k.split(".")[2]) for k in t.items if k.startswith("u_net.downs.")})
    mults = []
    for level in levels:
        name = f"u_net.downs.{level}.0.block1.proj.weight"
        width = t.shape(name, min_rank=1)[0]
        if width % dim:
            raise ConversionError(f"{t.label(name)}: {width} channels are not a multiple of the U-Net "
                                  f"dim {dim} ({t.label('u_net.init_conv.weight')})")
        mults.append(width // dim)
    qkv = "u_net.downs.0.2.fn.fn.to_qkv.weight"
    heads, dim_head = options["unet_heads"], options["unet_dim_head"]
    if t.shape(qkv, min_rank=1)[0] != 3 * heads * dim_head:
        raise ConversionError(f"--unet-heads {heads} × --unet-dim-head {dim_head} contradicts "
                              f"{t.label(qkv)}: its attention width is {t.shape(qkv)[0] // 3}")
    return UNetConfig(channels=channels, dim=dim, dim_mults=tuple(mults),
                      resnet_groups=options["unet_groups"], attn_heads=heads, attn_dim_head=dim_head,
                      pre_tanh=options["unet_tanh"])


def listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" … (+{len(names) - limit} more)" if len(names) > limit else "")
