"""The key layout of the official research code (IDSIA/fpainter; docs/MODEL.md §7), written once.

One table maps every tensor of our `FPAGenerator` to its name in the official generator, and both
directions use it: `to_official_state_dict` (ours → official, e.g. to build test files) and
`from_official_state_dict` (official → ours, what `fpa-convert` loads).

    ours               official                  notes
    step_embedding     decoder_time_enc          (T, input) Parameter; official flag use_pos_enc
    latent_to_init.*   latent_to_init.*          Linear(d → 2·L·H), h first
    input_generator.*  input_generator.*         v2 only: Linear(d → m·T)
    step_input.*       per_time_linear_input.*   v2 only: Linear(m → e)
    lstm.*             decoder_rnn.*             nn.LSTM (official: sequence-first; same weights)
    wide.0.*           wide_net.0.*              optional Linear(H → D') + ReLU
    kvb.*              kvb_net.*                 Linear → C·(2S + r), keys | values | lrs
    unet.*             u_net.*                   the U-Net keeps the official module names

The official U-Net generators also register every module a second time under `mod_dict.base.<i>` /
`mod_dict.unet.0` (parameter groups for the optimiser), so their state dicts hold each of those tensors
twice; `official_generator_state_dict` reproduces these aliases and `from_official_state_dict` drops them.
"""
from __future__ import annotations

from typing import Mapping, Optional

import torch

from fpa_export.models import FPAGenerator

# (ours, official), in the official registration order (the order of the official state dicts).
NAME_TABLE = (
    ("step_embedding", "decoder_time_enc"),
    ("latent_to_init.", "latent_to_init."),
    ("input_generator.", "input_generator."),
    ("step_input.", "per_time_linear_input."),
    ("lstm.", "decoder_rnn."),
    ("wide.", "wide_net."),
    ("kvb.", "kvb_net."),
    ("unet.", "u_net."),
)
ALIAS_PREFIX = "mod_dict."  # duplicate registrations of the U-Net models
# Modules the official U-Net models list in mod_dict['base'], in order (those that exist).
BASE_MODULES = ("latent_to_init.", "input_generator.", "per_time_linear_input.", "decoder_rnn.",
                "kvb_net.")
OFFICIAL_VERSION = "0.23.3"  # the 'version' string of official checkpoints (lightweight-gan's)
GAN_PREFIXES = ("G.", "GE.", "D.", "D_aug.D.")


def _translate(name: str, source: int) -> Optional[str]:
    """Rename one state-dict key from column `source` of NAME_TABLE to the other column."""
    for pair in NAME_TABLE:
        old, new = pair[source], pair[1 - source]
        if old.endswith("."):
            if name.startswith(old):
                return new + name[len(old):]
        elif name == old:
            return new
    return None


def official_name(ours: str) -> str:
    """Official name of one of our generator keys, e.g. 'lstm.weight_ih_l0' → 'decoder_rnn.weight_ih_l0'."""
    name = _translate(ours, 0)
    if name is None:
        raise KeyError(f"{ours!r} has no official counterpart")
    return name


def our_name(official: str) -> Optional[str]:
    """Our key for an official generator key (without the 'GE.' prefix); None if it has none."""
    return _translate(official, 1)


def is_alias(official: str) -> bool:
    """True for the `mod_dict.*` duplicates of the official U-Net generators."""
    return official.startswith(ALIAS_PREFIX)


def official_generator_state_dict(generator: FPAGenerator) -> dict[str, torch.Tensor]:
    """The official generator's state dict for our `generator` (copied tensors, official key order),
    including the `mod_dict.*` aliases of U-Net models as the SAME tensor objects, as in the original."""
    ours = {key: value.detach().cpu().clone() for key, value in generator.state_dict().items()}
    state: dict[str, torch.Tensor] = {}
    for our_prefix, _ in NAME_TABLE:  # official order
        for key, value in ours.items():
            if key == our_prefix or (our_prefix.endswith(".") and key.startswith(our_prefix)):
                state[official_name(key)] = value
    if generator.config.unet is not None:
        state.update(_mod_dict_aliases(state))
    return state


def _mod_dict_aliases(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    aliases = {}
    present = [prefix for prefix in BASE_MODULES if any(k.startswith(prefix) for k in state)]
    for index, prefix in enumerate(present):
        for key, value in state.items():
            if key.startswith(prefix):
                aliases[f"{ALIAS_PREFIX}base.{index}.{key[len(prefix):]}"] = value
    for key, value in state.items():
        if key.startswith("u_net."):
            aliases[f"{ALIAS_PREFIX}unet.0.{key[len('u_net.'):]}"] = value
    return aliases


def to_official_state_dict(generator: FPAGenerator, prefix: str = "GE.") -> dict[str, torch.Tensor]:
    """`official_generator_state_dict` with every key prefixed as inside the official 'GAN' dict."""
    return {prefix + key: value for key, value in official_generator_state_dict(generator).items()}


def from_official_state_dict(state: Mapping[str, torch.Tensor], prefix: str = "GE."):
    """Our state dict from the official tensors under `prefix` (aliases and other prefixes ignored).

    Returns (ours, unknown): `unknown` lists the official keys under `prefix` that have no counterpart
    in our generator (e.g. `learned_init`), with the prefix.
    """
    ours: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if not key.startswith(prefix) or is_alias(key[len(prefix):]):
            continue
        name = our_name(key[len(prefix):])
        if name is None:
            unknown.append(key)
        else:
            ours[name] = value
    return ours, unknown
