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

from fpa_export.common.atomic import atomic_write_bytes
from fpa_export.common.errors import FpaError
from fpa_export.common.version import PACKAGE_VERSION

from . import DEFAULT_CHECKPOINT, default_checkpoint_path  # noqa: F401 (re-exported)
from .config import ConfigError, FPAConfig
from .fpa import FPAGenerator
from .summary import describe, describe_config  # noqa: F401 (re-exported)

FORMAT = "fpa-export"
FORMAT_VERSION = 1
GENERATOR_KIND = "fpa_generator"
CHECKPOINT_SUFFIXES = (".pt", ".pth")  # the names a checkpoint is written as (fpa-convert refuses others)
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


class CheckpointWriteError(CheckpointError, OSError):
    """A checkpoint that could not be written (disk full, read-only folder); the old file is intact."""


def save_checkpoint(path: str | os.PathLike, generator: FPAGenerator, **extra: Any) -> Path:
    """Save `generator` (plus optional step/train_state/metrics/source/ema) atomically to `path`.

    The file is serialised in memory first, so a write failure is one OSError from the file system
    (turned into one line naming the file); the rename never happens and the previous file is intact."""
    ckpt = make_checkpoint(generator, **extra)
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)  # into memory: torch's zip writer turns a failed file write into RuntimeError
    try:
        return atomic_write_bytes(path, buffer.getbuffer())
    except OSError as err:
        raise CheckpointWriteError(f"{path}: cannot write the checkpoint ({err.strerror or err}); "
                                   "the previous file, if any, is intact") from None


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
    with torch.device("meta"):  # the weights come from the file: no initialisation to pay for
        generator = FPAGenerator(config, initialise=False)
    _check_state_dict(generator, ckpt["state_dict"], path)
    weights = {key: value.to(torch.float32, copy=True) for key, value in ckpt["state_dict"].items()}
    generator.load_state_dict(weights, assign=True)  # the module's own copies, float32
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
    other = sniff_non_checkpoint(data, path.suffix) or zip_damage(data)
    if other:
        raise CheckpointError(f"{path}: {other}")
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


PASS_INSTEAD = "pass the .pt checkpoint written by fpa-train or fpa-convert"
_IMAGE_MAGIC = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image"}


def sniff_non_checkpoint(data: bytes, suffix: str = "", instead: str = PASS_INSTEAD) -> str:
    """By its first bytes, what a file that cannot be a torch checkpoint is, and what to pass `instead`;
    '' when it may be one (a torch zip archive or a legacy pickle, which `torch.load` then judges)."""
    head = data[:16]
    if len(head) >= 3 and head[0] == 0x08 and head[1] < 0x80 and head[2] in (0x12, 0x1a, 0x22, 0x2a, 0x32, 0x3a):
        return ("this is an ONNX graph (protobuf), not a checkpoint; " + instead + " (fpa-sample, "
                "fpa-gif and fpa-fd read .onnx files directly)")
    if suffix.lower() in (".plan", ".engine", ".trt"):
        return "this looks like a TensorRT engine, not a checkpoint; " + instead
    for magic, kind in _IMAGE_MAGIC.items():
        if head.startswith(magic):
            return f"this is {kind}, not a checkpoint; {instead}"
    if head.lstrip()[:1] in (b"{", b"["):
        return "this is a JSON/text file, not a checkpoint; " + instead
    if head.startswith(b"PK\x03\x04"):
        if b"data.pkl" not in data[:4096] and b".npy" in data[:4096]:
            return "this is a numpy .npz archive (e.g. statistics), not a checkpoint; " + instead
        return ""  # torch's zip format
    if head[:1] == b"\x80" or not data:
        return ""  # a pickle (legacy torch format) or empty: torch.load's errors say the rest
    return "not a torch checkpoint (unknown file type); " + instead


def zip_damage(data: bytes) -> str:
    """Why a torch zip archive is damaged ('' when it is not one, or is sound): torch reads its members
    without checking their CRC-32, so a changed byte in a tensor would load as a silently different
    weight. Checked here, in one pass (about 9 ms for the 26 MB paper-size checkpoint)."""
    import zipfile

    if not data.startswith(b"PK\x03\x04"):
        return ""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        return f"truncated or corrupted file ({type(err).__name__})"
    return f"damaged: {bad} fails its CRC-32 check (the file changed after it was written)" if bad else ""


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
        kind = not_dense(value)
        if kind:
            raise CheckpointError(f"{path}: state_dict[{key!r}] is {kind}; only dense tensors are read")
        if tuple(value.shape) != tuple(tensor.shape):
            raise CheckpointError(f"{path}: state_dict[{key!r}] has shape {tuple(value.shape)}, "
                                  f"the config expects {tuple(tensor.shape)}")
        if not value.is_floating_point():
            raise CheckpointError(f"{path}: state_dict[{key!r}] has dtype {value.dtype}, expected float")
        bad = non_finite_count(value)
        if bad:
            raise CheckpointError(f"{path}: state_dict[{key!r}] holds {bad} NaN/inf value(s); "
                                  "the model would paint garbage, refused")


def not_dense(value: torch.Tensor) -> str:
    """What a tensor that holds no plain dense data is ('a meta tensor (no data)', 'a torch.sparse_coo
    tensor'), or '' for a dense one: weights are copied only from dense tensors."""
    if value.is_meta:
        return "a meta tensor (no data)"
    return "" if value.layout == torch.strided else f"a {value.layout} tensor"


def non_finite_count(value: torch.Tensor) -> int:
    """How many NaN/inf values a float tensor holds. A finite sum means every element is finite (an
    inf or NaN would propagate): one pass that is 20× cheaper than the element test, which runs only
    when the sum is not finite (it may also overflow)."""
    if bool(torch.isfinite(value.sum())):
        return 0
    return int((~torch.isfinite(value)).sum())
