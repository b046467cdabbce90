"""Configurations of the networks: `FPAConfig` (the painter, FPA_SPEC §1–2) and `UNetConfig` (§5).

Both are frozen dataclasses saved inside every checkpoint as plain dicts (`to_dict` / `from_dict`), so a
checkpoint never needs code to be unpickled. The defaults of `FPAConfig` are the paper's CelebA model
(64×64 RGB, 64 painting steps, v2 input generator), which has 6,437,891 trainable parameters.
"""
from __future__ import annotations

import dataclasses
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
        object.__setattr__(self, "dim_mults", tuple(int(m) for m in self.dim_mults))
        _check(self.channels in (1, 3), f"channels must be 1 or 3, got {self.channels}")
        _check(self.dim > 0 and len(self.dim_mults) > 0, "dim and dim_mults must be positive")
        # The head concatenates the init-conv features (dim channels) with the first level's output.
        _check(self.dim_mults[0] == 1, f"dim_mults must start with 1, got {self.dim_mults}")


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
        _check(self.input_generator in INPUT_GENERATORS,
               f"input_generator must be one of {INPUT_GENERATORS}, got {self.input_generator!r}")
        _check(self.channels in (1, 3), f"channels must be 1 or 3, got {self.channels}")
        for name in ("image_size", "num_steps", "latent_size", "mini_latent_size", "input_size",
                     "hidden_size", "num_layers"):
            _check(int(getattr(self, name)) > 0, f"{name} must be positive, got {getattr(self, name)}")
        _check(self.wide_out_dim >= 0, f"wide_out_dim must be >= 0, got {self.wide_out_dim}")
        if self.unet is not None:
            _check(self.unet.channels == self.channels,
                   f"unet.channels={self.unet.channels} but channels={self.channels}")
            factor = 2 ** (len(self.unet.dim_mults) - 1)
            _check(self.image_size % factor == 0,
                   f"image_size {self.image_size} is not divisible by the U-Net's {factor}")

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


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
