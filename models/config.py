"""Configurations of the networks: `FPAConfig` (the painter, docs/MODEL.md §1–2) and `UNetConfig` (§5).

Both are frozen dataclasses saved inside every checkpoint as plain dicts (`to_dict` / `from_dict`), so a
checkpoint never needs code to be unpickled. The defaults of `FPAConfig` are the paper's CelebA model
(64×64 RGB, 64 painting steps, v2 input generator), which has 6,437,891 trainable parameters.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any, Optional

from fpa_export.common.errors import FpaError

INPUT_GENERATORS = ("v1", "v2")


@dataclass(frozen=True)
class UNetConfig:
    channels: int = 3                       # image channels in and out (1 or 3)
    dim: int = 64                           # channels of the first level
    dim_mults: tuple[int, ...] = (1, 2, 4)  # channel multiplier per level (len-1 down-samplings)
    resnet_groups: int = 8                  # GroupNorm groups in every ResNet block
    attn_heads: int = 4                     # heads of the linear and full attention layers
    attn_dim_head: int = 32                 # channels per attention head
    pre_tanh: bool = True                   # U sees tanh(W_T), not W_T (official flag unet_tanh)

    def __post_init__(self):
        for name in ("channels", "dim", "resnet_groups", "attn_heads", "attn_dim_head"):
            _set_int(self, name, f"unet.{name}")
        _set_bool(self, "pre_tanh", "unet.pre_tanh")
        _check(isinstance(self.dim_mults, (list, tuple)) and 0 < len(self.dim_mults) <= MAX_UNET_LEVELS,
               f"unet.dim_mults must be a list of 1 to {MAX_UNET_LEVELS} integers, got {self.dim_mults!r}")
        object.__setattr__(self, "dim_mults", tuple(_as_int(m, "unet.dim_mults") for m in self.dim_mults))
        _check(self.channels in (1, 3), f"channels must be 1 or 3, got {self.channels}")
        for name in ("dim", "resnet_groups", "attn_heads", "attn_dim_head"):
            _in_range(f"unet.{name}", getattr(self, name))
        _check(all(0 < m <= MAX_DIM for m in self.dim_mults), f"unet.dim_mults must be positive, got {self.dim_mults}")
        # The head concatenates the init-conv features (dim channels) with the first level's output.
        _check(self.dim_mults[0] == 1, f"dim_mults must start with 1, got {self.dim_mults}")
        bad = [self.dim * m for m in self.dim_mults if (self.dim * m) % self.resnet_groups]
        _check(not bad, f"unet channels {bad} are not divisible by resnet_groups={self.resnet_groups}")


@dataclass(frozen=True)
class FPAConfig:
    image_size: int = 64              # S: the canvas is S×S per channel
    channels: int = 3                 # C: 3 (RGB) or 1 (greyscale), one S×S matrix each
    num_steps: int = 64               # T: painting steps, one rank-1 update per step
    latent_size: int = 512            # d: size of the latent z
    mini_latent_size: int = 8         # m: per-step slice of the v2 input generator's output
    input_size: int = 128             # e: LSTM input size of the v2 generator (v1 feeds z, size d)
    hidden_size: int = 1024           # H: LSTM hidden size
    num_layers: int = 1               # L: LSTM layers
    input_generator: str = "v2"       # 'v2' (lstm_delta_split_v2, the paper's) or 'v1' (lstm_delta)
    input_tanh: bool = True           # v2: tanh after Linear(d → m·T) (official flag v2_input_sigmoid)
    latent_to_init: bool = True       # v2: (h0, c0) from Linear(d → 2·L·H)(z); v1 always does this
    key_softmax: bool = True          # keys = softmax(raw key) over the S entries
    value_tanh: bool = False          # values = tanh(raw value) instead of raw
    lr_sigmoid: bool = True           # learning rates = sigmoid(raw); False = official no_lr_sigmoid
    lr_per_row: bool = False          # one learning rate per row (r = S) instead of one per step (r = 1)
    out_tanh: bool = True             # final tanh: tanh(W_T), or tanh(U(·)) for U-Net models
    step_embedding: bool = False      # learned per-step embedding added to the LSTM input (use_pos_enc)
    wide_out_dim: int = 0             # > 0: extra Linear(H → wide_out_dim) + ReLU before kvb
    unet: Optional[UNetConfig] = None # U-Net refinement (*_unet models): tanh(U(tanh(W_T))) by default

    def __post_init__(self):
        if isinstance(self.unet, dict):
            object.__setattr__(self, "unet", UNetConfig(**self.unet))
        _check(self.unet is None or isinstance(self.unet, UNetConfig), "unet must be a dict or None")
        for name in INT_FIELDS:
            _set_int(self, name, name)
        for name in BOOL_FIELDS:
            _set_bool(self, name, name)
        _check(self.input_generator in INPUT_GENERATORS,
               f"input_generator must be one of {INPUT_GENERATORS}, got {self.input_generator!r}")
        _check(self.channels in (1, 3), f"channels must be 1 or 3, got {self.channels}")
        for name in INT_FIELDS[2:]:
            _in_range(name, getattr(self, name), low=0 if name == "wide_out_dim" else 1)
        _in_range("image_size", self.image_size, high=MAX_IMAGE_SIZE)
        _in_range("num_steps", self.num_steps, high=MAX_STEPS)
        if self.unet is not None:
            _check(self.unet.channels == self.channels,
                   f"unet.channels={self.unet.channels} but channels={self.channels}")
            factor = 2 ** (len(self.unet.dim_mults) - 1)
            _check(self.image_size % factor == 0,
                   f"image_size {self.image_size} is not divisible by the U-Net's {factor}")
        check_size(self)

    @property
    def lr_size(self) -> int:
        """r: learning rates per step and channel."""
        return self.image_size if self.lr_per_row else 1

    @property
    def kvb_size(self) -> int:
        """Outputs of the kvb layer: C·(2S + r), split keys | values | learning rates."""
        return self.channels * (2 * self.image_size + self.lr_size)

    @property
    def lstm_input_size(self) -> int:
        return self.input_size if self.input_generator == "v2" else self.latent_size

    def replace(self, **changes: Any) -> "FPAConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain primitives (tuples become lists) for checkpoints and JSON."""
        out = dataclasses.asdict(self)
        if out["unet"] is not None:
            out["unet"]["dim_mults"] = list(out["unet"]["dim_mults"])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "FPAConfig":
        """Inverse of `to_dict`; unknown fields are an error naming them."""
        if not isinstance(data, dict):
            raise ConfigError(f"config must be a dict, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        data = dict(data)
        unet = data.get("unet")
        if isinstance(unet, dict):
            unknown = sorted(set(unet) - {f.name for f in dataclasses.fields(UNetConfig)})
            if unknown:
                raise ConfigError(f"unknown unet config field(s): {', '.join(unknown)}")
            data["unet"] = UNetConfig(**unet)
        return cls(**data)


class ConfigError(FpaError):
    """A configuration that cannot describe a valid model."""


# -- validation before anything is allocated ------------------------------------------------------------
INT_FIELDS = ("image_size", "channels", "num_steps", "latent_size", "mini_latent_size", "input_size",
              "hidden_size", "num_layers", "wide_out_dim")
BOOL_FIELDS = ("input_tanh", "latent_to_init", "key_softmax", "value_tanh", "lr_sigmoid", "lr_per_row",
               "out_tanh", "step_embedding")
MAX_DIM = 1 << 16            # any single width (hidden size, latent size, U-Net channels, …)
MAX_IMAGE_SIZE = 4096
MAX_STEPS = 100_000
MAX_UNET_LEVELS = 8
MAX_PARAMETERS = 1_000_000_000     # 4 GB of fp32 weights; the paper's models have 6.4 M (+ 8.0 M U-Net)
MAX_FLOATS_PER_IMAGE = 1 << 28     # 1 GiB of fp32 activations per image (the paper's FPA: ≈ 0.6 M)


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    return int(value)


def _set_int(obj, field: str, name: str) -> None:
    object.__setattr__(obj, field, _as_int(getattr(obj, field), name))


def _set_bool(obj, field: str, name: str) -> None:
    value = getattr(obj, field)
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r} ({type(value).__name__})")


def _in_range(name: str, value: int, low: int = 1, high: int = MAX_DIM) -> None:
    _check(low <= value <= high, f"{name} must be between {low} and {high}, got {value}")


def _unet_estimate(u: UNetConfig, image_size: int) -> tuple[float, float]:
    """(parameters, activation floats per image) of the U-Net, within a factor of about 1.5."""
    widths = [u.dim * m for m in u.dim_mults]
    params = 100 * sum(w * w for w in widths) + 40 * widths[-1] ** 2
    floats = sum(20 * w * (image_size / 2 ** i) ** 2 for i, w in enumerate(widths))
    return float(params), float(floats)


def estimate(config: "FPAConfig") -> tuple[float, float]:
    """(parameters, activation floats per image) of the model, from the config alone (no allocation)."""
    c = config
    inp, hidden, layers, width = c.lstm_input_size, c.hidden_size, c.num_layers, c.wide_out_dim
    lstm = 4 * hidden * (inp + hidden + 2) + (layers - 1) * 4 * hidden * (2 * hidden + 2)
    params = lstm + ((width or hidden) + 1) * c.kvb_size + (hidden + 1) * width
    params += (c.latent_size + 1) * 2 * layers * hidden + c.num_steps * inp
    if c.input_generator == "v2":
        params += (c.latent_size + 1) * c.mini_latent_size * c.num_steps + (c.mini_latent_size + 1) * inp
    floats = c.num_steps * (inp + 5 * hidden * layers + c.kvb_size + width + c.channels * c.image_size)
    floats += 2 * c.channels * c.image_size ** 2
    if c.unet is not None:
        unet_params, unet_floats = _unet_estimate(c.unet, c.image_size)
        params, floats = params + unet_params, floats + unet_floats
    return float(params), float(floats)


def check_size(config: "FPAConfig") -> None:
    """Refuse, in one line, a model too large to allocate sensibly (before anything is allocated)."""
    params, floats = estimate(config)
    _check(params <= MAX_PARAMETERS,
           f"the model would have about {params:.3g} parameters (limit {MAX_PARAMETERS:.0e}); check the sizes")
    _check(floats <= MAX_FLOATS_PER_IMAGE,
           f"the model would need about {floats * 4 / 2**30:.3g} GiB of activations per image "
           f"(limit {MAX_FLOATS_PER_IMAGE * 4 / 2**30:.0f} GiB); check image_size, num_steps and the widths")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
