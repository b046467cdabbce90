"""The one checkpoint format of this project, and the one loader every command uses (STYLE.md).

A checkpoint is a plain dict of tensors and primitives, saved atomically and loaded with
`torch.load(weights_only=True)`, so opening a file can never run code:

    format          "fpa-export"                 a constant that identifies our files
    format_version  1
    kind            "fpa_generator"              what the state dict is
    config          FPAConfig.to_dict()          includes the U-Net config when there is one
    state_dict      the generator used for sampling (the EMA one after training)
    step            training step (0 for converted or untrained models)
    package_version the fpa-export version that wrote it
    train_state     optional: optimisers, discriminator, raw generator, RNG (training resumes from it)
    metrics         optional: e.g. {"fd_pixel": ..., "selected_by": {"metric": ..., "samples": ...}}
    source          optional: provenance (e.g. the official file a conversion came from)
    ema             optional, written by training: {"started": first EMA update step or None (the
                    "EMA" weights are then a plain copy of G at "last_reset"), "last_reset", "beta"}
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any, Optional

import torch

from fpa_export.common.atomic import atomic_write
from fpa_export.common.errors import FpaError
from fpa_export.common.version import PACKAGE_VERSION

from .config import ConfigError, FPAConfig
from .fpa import FPAGenerator

FORMAT = "fpa-export"
FORMAT_VERSION = 1
GENERATOR_KIND = "fpa_generator"
REQUIRED_KEYS = ("format", "format_version", "kind", "config", "state_dict", "step", "package_version")


class CheckpointError(FpaError):
    """A file that is not a valid checkpoint; the message is one line naming the problem."""


def make_checkpoint(generator: FPAGenerator, *, step: int = 0, train_state: Optional[dict] = None,
                    metrics: Optional[dict] = None, source: Optional[dict] = None,
                    ema: Optional[dict] = None) -> dict:
    """The checkpoint dict for `generator` (weights copied to CPU)."""
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": GENERATOR_KIND,
        "config": generator.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in generator.state_dict().items()},
        "step": int(step),
        "package_version": PACKAGE_VERSION,
    }
    for key, value in (("train_state", train_state), ("metrics", metrics), ("source", source), ("ema", ema)):
        if value is not None:
            ckpt[key] = value
    return ckpt


def save_checkpoint(path: str | os.PathLike, generator: FPAGenerator, **extra: Any) -> Path:
    """Save `generator` (plus optional step/train_state/metrics/source) atomically to `path`."""
    ckpt = make_checkpoint(generator, **extra)
    return atomic_write(path, lambda handle: torch.save(ckpt, handle))


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate the checkpoint dict (not the model). Raises CheckpointError."""
    raw = _safe_load(path)
    _validate_layout(raw, path)
    return raw


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """(generator in eval mode, checkpoint dict) — the loader every command uses."""
    ckpt = read_checkpoint(path)
    try:
        config = FPAConfig.from_dict(ckpt["config"])
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{path}: invalid config: {err}") from None
    generator = FPAGenerator(config)
    _check_state_dict(generator, ckpt["state_dict"], path)
    generator.load_state_dict(ckpt["state_dict"])
    return generator.to(device).eval(), ckpt


def _safe_load(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read: {err.strerror or err}") from None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err) or "Unsupported global" in str(err):
            raise CheckpointError(
                f"{path}: refused: the file holds Python objects beyond tensors and primitives "
                "(loading it could run code)") from None
        raise CheckpointError(f"{path}: not a checkpoint (corrupted or not a torch file)") from None
    except Exception as err:  # torch raises assorted errors (EOF, zip, Runtime, Value) on broken files
        raise CheckpointError(f"{path}: truncated or corrupted file ({type(err).__name__})") from None


def _validate_layout(raw: Any, path) -> None:
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not a checkpoint: top level is {type(raw).__name__}, not a dict")
    if raw.get("format") != FORMAT:
        if "GAN" in raw and "version" in raw:
            raise CheckpointError(f"{path}: this is an official fpainter checkpoint; "
                                  "convert it first with `fpa-convert`")
        raise CheckpointError(f"{path}: not an fpa-export checkpoint (missing or wrong 'format' key)")
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        raise CheckpointError(f"{path}: missing key(s): {', '.join(missing)}")
    if raw["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format_version {raw['format_version']!r} is not supported "
                              f"(this version reads {FORMAT_VERSION})")
    if raw["kind"] != GENERATOR_KIND:
        raise CheckpointError(f"{path}: checkpoint kind is {raw['kind']!r}, expected {GENERATOR_KIND!r}")
    if not isinstance(raw["state_dict"], dict):
        raise CheckpointError(f"{path}: 'state_dict' is not a dict")


def _check_state_dict(generator: FPAGenerator, state: dict, path) -> None:
    expected = generator.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        raise CheckpointError(f"{path}: state_dict is missing key(s): {', '.join(missing[:5])}"
                              + (" …" if len(missing) > 5 else ""))
    if unexpected:
        raise CheckpointError(f"{path}: state_dict has unexpected key(s): {', '.join(unexpected[:5])}"
                              + (" …" if len(unexpected) > 5 else ""))
    for key, tensor in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: state_dict[{key!r}] is {type(value).__name__}, not a tensor")
        if tuple(value.shape) != tuple(tensor.shape):
            raise CheckpointError(f"{path}: state_dict[{key!r}] has shape {tuple(value.shape)}, "
                                  f"the config expects {tuple(tensor.shape)}")
        if not value.is_floating_point():
            raise CheckpointError(f"{path}: state_dict[{key!r}] has dtype {value.dtype}, expected float")


def describe(ckpt: dict) -> str:
    """One-line summary of a checkpoint dict for command lines: model, step and the EMA's state."""
    c = ckpt.get("config") or {}
    unet = c.get("unet")
    parts = [f"FPA {c.get('input_generator', '?')} {c.get('image_size', '?')} px × {c.get('channels', '?')} ch",
             f"T={c.get('num_steps', '?')}", f"H={c.get('hidden_size', '?')}", f"d={c.get('latent_size', '?')}"]
    if isinstance(unet, dict):
        parts.append(f"U-Net dim {unet.get('dim', '?')}")
    parts.append(f"step {ckpt.get('step', '?')}")
    return ", ".join(parts) + ", " + _describe_ema(ckpt.get("ema"))


def _describe_ema(ema: Any) -> str:
    if not isinstance(ema, dict):
        return "EMA: not recorded"
    if ema.get("started") is None:
        reset = ema.get("last_reset")
        return "EMA: none (a copy of G" + (f" at step {reset})" if reset is not None else ")")
    since = max(ema["started"], ema.get("last_reset") or 0)  # a later reset restarts the average
    return f"EMA: averaging since step {since}"


DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default_model.pt"


def default_checkpoint_path() -> Path:
    """The embedded default model, shipped as package data beside this file."""
    return DEFAULT_CHECKPOINT
