"""Import checkpoints of the official research code (IDSIA/fpainter) into our format (docs/MODEL.md §7).

An official `model_<N>.pt` holds the state dict of the whole GAN but no hyper-parameters. We read it
with `weights_only=True`, take the generator tensors (EMA prefix `GE.` by default), infer from their
shapes everything the shapes determine (S, C, H, L, d, m, T, e, the U-Net, `wide_out_dim`, the
per-step embedding, one learning rate per step or per row), take the rest from options whose defaults
are the paper's recipe, and refuse any option that contradicts a tensor, naming both.
The key renaming lives in `fpa_export.convert.keys` (one table, both directions), the reading of
hyper-parameters off the shapes in `fpa_export.convert.infer`.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from fpa_export.common.atomic import check_replaceable, check_suffix, check_writable
from fpa_export.common.errors import FpaError, not_a_file
from fpa_export.models import FPAConfig, FPAGenerator, read_checkpoint, save_checkpoint
from fpa_export.models.checkpoint import (CHECKPOINT_SUFFIXES, FORMAT, non_finite_count, sniff_non_checkpoint,
                                          zip_damage)
from .infer import ConversionError, OfficialTensors, infer_config, listing
from .keys import from_official_state_dict, official_name
from .options import DEFAULTS, MODEL_TYPES, WEIGHTS

__all__ = ["convert_official", "read_official", "ConversionError", "ConversionWarning", "DEFAULTS",
           "MODEL_TYPES", "WEIGHTS"]
SOURCE_KIND = "official-fpainter"  # the `source.kind` of a converted checkpoint
UNSUPPORTED = {"learned_init": "a learned initial canvas (official --use_learned_init)"}


class ConversionWarning(UserWarning):
    """Something the user should know about a conversion that still succeeded."""


def convert_official(path: str | os.PathLike, out: str | os.PathLike, model_type: Optional[str] = None,
                     steps: Optional[int] = None, weights: str = "GE", strict: bool = True,
                     trust_pickle: bool = False, force: bool = False, **options: Any) -> Path:
    """Convert the official checkpoint `path` into our checkpoint `out`; returns `out`.

    model_type: one of MODEL_TYPES, or None to infer it from the keys. steps: T, or None to infer it.
    weights: 'GE' (EMA generator, what the paper samples from) or 'G' (raw generator).
    strict=False ignores unknown generator keys (with a warning) instead of failing.
    An existing `out` is replaced only when it is itself a checkpoint without a train state (an earlier
    conversion); a training checkpoint or any other file is kept (ConversionError) unless `force`.
    options: see DEFAULTS. Raises ConversionError with a one-line message.
    """
    path = Path(path)
    if Path(out).resolve() == path.resolve():
        raise ConversionError(f"{out}: the output would overwrite the official file")
    check_suffix(out, CHECKPOINT_SUFFIXES, "checkpoint", ConversionError)  # not over a graph or stats
    try:
        check_writable(out, "checkpoint")
    except FpaError as err:
        raise ConversionError(str(err)) from None
    if not force:
        check_replaceable(out, "a converted checkpoint (it is a training checkpoint or another file)",
                          _converted, "pass --force to replace it", ConversionError)
    if weights not in WEIGHTS:
        raise ConversionError(f"--weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if model_type is not None and model_type not in MODEL_TYPES:
        raise ConversionError(f"--model-type must be one of {', '.join(MODEL_TYPES)}, got {model_type!r}")
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConversionError(f"unknown option(s): {', '.join(unknown)}")
    options = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}

    data, digest = read_official(path, trust_pickle)
    tensors = OfficialTensors(data["GAN"], weights + ".", path)
    notes: list[str] = []
    model_type, config = infer_config(tensors, model_type, steps, options, notes)
    _check_options_apply(options, config, path)
    generator = load_weights(config, tensors, strict, notes, model_type)
    for note in notes:
        warnings.warn(note, ConversionWarning, stacklevel=2)
    source = {
        "kind": SOURCE_KIND,
        "file": path.name,
        "sha256": digest,
        "official_version": str(data.get("version")),
        "weights": weights,
        "model_type": model_type,
        "options": _options_used(options, config, strict),
        "notes": notes,
    }
    return save_checkpoint(out, generator, step=0, source=source)


def _converted(path: Path) -> bool:
    """Whether the file at `path` is what a conversion writes: a checkpoint whose `source` record is a
    conversion's (not a trained model, nor one saved by `save_checkpoint` or another tool)."""
    try:
        record = read_checkpoint(path)
    except FpaError:
        return False
    source = record.get("source")
    return (not record.get("train_state") and isinstance(source, dict)
            and source.get("kind") == SOURCE_KIND)


def _check_options_apply(options: dict, config: FPAConfig, path: Path) -> None:
    """An option changed from its default that this model has no use for (a U-Net option for a model
    without one, --no-input-tanh for a v1 model) is an error, not silently dropped."""
    unused = [k for k in options if k.startswith("unet_")] if config.unet is None else []
    unused += ["input_tanh"] if config.input_generator == "v1" else []
    changed = [k for k in unused if options[k] != DEFAULTS[k]]
    if changed:
        flag = changed[0].replace("_", "-")
        if isinstance(DEFAULTS[changed[0]], bool):
            flag = flag if options[changed[0]] else f"no-{flag}"
        what = "a U-Net" if changed[0].startswith("unet_") else "the v2 input generator"
        raise ConversionError(f"--{flag} applies only to a model with {what}; {path} has none")


def _options_used(options: dict, config: FPAConfig, strict: bool) -> dict:
    """The options that shaped this model, resolved (for the checkpoint's `source` record)."""
    used = {**options, "steps": config.num_steps, "image_size": config.image_size,
            "channels": config.channels, "strict": strict}
    if config.unet is None:
        used = {k: v for k, v in used.items() if not k.startswith("unet_")}
    if config.input_generator == "v1":
        used.pop("input_tanh")
    return used


# -- reading ----------------------------------------------------------------------------------------
def read_official(path: Path, trust_pickle: bool = False) -> tuple[dict, str]:
    """(the official dict, sha256 of the file). Only tensors and primitives unless `trust_pickle`."""
    if not path.is_file():
        raise ConversionError(not_a_file(path))
    raw = path.read_bytes()
    other = (sniff_non_checkpoint(raw, path.suffix, instead="pass an official fpainter model_<N>.pt")
             or zip_damage(raw))
    if other:  # an image, a graph, a text file: said as such (not "corrupted", never "--trust-pickle")
        raise ConversionError(f"{path}: {other}")
    digest = hashlib.sha256(raw).hexdigest()
    if trust_pickle:
        warnings.warn(f"{path}: --trust-pickle: loading with full unpickling, which can run any code "
                      "stored in the file; do this only for files from a source you trust",
                      ConversionWarning, stacklevel=3)
    try:
        data = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found:
            raise ConversionError(
                f"{path}: refused: the file holds a Python object ({found.group(1)}) that only full "
                "unpickling can create, and unpickling can run code; re-run with --trust-pickle only "
                "if you trust the file") from None
        detail = re.search(r"Unsupported [\w ]+", str(err))
        raise ConversionError(
            f"{path}: not a torch checkpoint, or one that only full unpickling can read"
            + (f" ({detail.group(0).strip()})" if detail else "")
            + "; --trust-pickle reads the latter, only for files you trust") from None
    except Exception as err:  # torch raises assorted errors (EOF, zip, Runtime) on broken files
        raise ConversionError(f"{path}: truncated or corrupted file ({type(err).__name__})") from None
    _check_layout(data, path)
    return data, digest


def _check_layout(data: Any, path: Path) -> None:
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: not an official checkpoint: the top level is a "
                              f"{type(data).__name__}, not a dict")
    if data.get("format") == FORMAT:
        raise ConversionError(f"{path}: already an fpa-export checkpoint; no conversion needed")
    if not isinstance(data.get("GAN"), Mapping):
        keys = ", ".join(map(str, list(data)[:6])) or "none"
        raise ConversionError(f"{path}: not an official fpainter checkpoint: no 'GAN' state dict "
                              f"(top-level keys: {keys})")


# -- loading ------------------------------------------------------------------------------------------
def load_weights(config: FPAConfig, t: OfficialTensors, strict: bool, notes: list[str],
                 model_type: str) -> FPAGenerator:
    """Our generator for `config` with the official weights; every key accounted for."""
    generator = FPAGenerator(config)
    expected = generator.state_dict()
    ours, unknown = from_official_state_dict(t.gan, t.prefix)
    unknown += [t.prefix + official_name(k) for k in ours if k not in expected]
    unsupported = [k for k in unknown if k[len(t.prefix):].split(".")[0] in UNSUPPORTED]
    if unsupported:
        what = UNSUPPORTED[unsupported[0][len(t.prefix):].split(".")[0]]
        raise ConversionError(f"{t.path}: {unsupported[0]} is {what}, which our generator does not "
                              "support; ignoring it would change every image")
    missing = [t.prefix + official_name(k) for k in expected if k not in ours]
    if missing:
        raise ConversionError(f"{t.path}: missing key(s) for a {model_type} generator: {listing(missing)}")
    if unknown and strict:
        raise ConversionError(f"{t.path}: unknown key(s) for a {model_type} generator: "
                              f"{listing(unknown)} (--no-strict ignores them)")
    if unknown:
        notes.append(f"ignored unknown key(s): {listing(unknown)}")
    state = {}
    for key, target in expected.items():
        if tuple(ours[key].shape) != tuple(target.shape):
            name = official_name(key)
            raise ConversionError(f"{t.label(name)} does not fit the inferred model, which expects "
                                  f"{'×'.join(map(str, target.shape))}")
        state[key] = ours[key].to(torch.float32)
        bad = non_finite_count(state[key])
        if bad:
            raise ConversionError(f"{t.path}: {t.prefix}{official_name(key)} holds {bad} NaN/inf "
                                  "value(s); the model would paint garbage, nothing written")
    generator.load_state_dict(state, strict=True)
    return generator.eval()


