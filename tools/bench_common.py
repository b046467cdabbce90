"""What the benchmark scripts in this folder share: machine load, feature detection, fidelity figures.

- `machine_state()`: `uptime` and os.getloadavg(), recorded at the start and end of every run; a run
  that starts with a 1-minute load average above `QUIET_LOAD` prints `LOADED_WARNING`.
- `cpu_has_bf16()`, `cli_has_precision()`, `api_has_precision()`: the bf16 contenders need a CPU with
  bf16 instructions and the `--precision` option / `precision=` argument; without one they are skipped
  with a printed note, so the scripts run before and after that option exists.
- `level_stats()` / `folder_fidelity()`: how far low-precision images are from fp32 ones of the same
  indices, in uint8 levels (the issue's tolerance: ≥ 99 % of values within 2 levels, mean ≤ 0.5).
"""
from __future__ import annotations

import inspect
import os
from pathlib import Path
import subprocess
import sys
from typing import Optional

import numpy as np

# the low-precision tolerance is the package's own: levels, fraction within them, mean levels
from fpa_export.runtime.precision import (MAX_MEAN_LEVELS as FIDELITY_MEAN, MIN_WITHIN as FIDELITY_FRACTION,
                                          WITHIN_LEVELS as FIDELITY_WITHIN)

QUIET_LOAD = 0.5
LOADED_WARNING = "loaded machine: not a result"
BIN = Path(sys.executable).parent


def machine_state() -> dict:
    """Load average (1, 5, 15 min), CPU count and the `uptime` line, now."""
    try:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        uptime = ""
    return {"loadavg": list(os.getloadavg()), "uptime": uptime, "cpu_count": os.cpu_count()}


def versions(packages=("torch", "onnxruntime", "onnxruntime-gpu", "onnx", "fpa-export")) -> dict:
    """Python, installed package versions and the CPU model: the conditions a figure was taken in."""
    import importlib.metadata as metadata
    import platform

    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                found["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    found["cpu_bf16"] = cpu_has_bf16()
    return found


def load_warning(state: dict) -> Optional[str]:
    """The warning line when the 1-minute load average exceeds QUIET_LOAD, else None."""
    load = state["loadavg"][0]
    if load > QUIET_LOAD:
        return f"WARNING: {LOADED_WARNING} (1-min load average {load:.2f} > {QUIET_LOAD} at start)"
    return None


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU advertises bf16 instructions (runtime.precision.BF16_FLAGS)."""
    from fpa_export.common.devices import cpu_flags
    from fpa_export.runtime.precision import BF16_FLAGS

    return bool(cpu_flags(cpuinfo) & set(BF16_FLAGS))


def cli_has_precision(command: Optional[list[str]] = None) -> bool:
    """True when `fpa-sample --help` lists --precision."""
    command = command or [str(BIN / "fpa-sample"), "--help"]
    try:
        text = subprocess.run(command, capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--precision" in text


def api_has_precision(function) -> bool:
    """True when `function` takes a `precision` parameter by name."""
    try:
        return "precision" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def level_stats(reference: np.ndarray, other: np.ndarray) -> dict:
    """uint8 arrays of one shape → max/mean level difference and the fraction within 2 levels."""
    if reference.shape != other.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {other.shape}")
    diff = np.abs(reference.astype(np.int16) - other.astype(np.int16))
    within = float((diff <= FIDELITY_WITHIN).mean()) if diff.size else 1.0
    mean = float(diff.mean()) if diff.size else 0.0
    return {"values": int(diff.size), "max_level": int(diff.max(initial=0)), "mean_level": mean,
            "within_2_fraction": within,
            "passes": within >= FIDELITY_FRACTION and mean <= FIDELITY_MEAN}


def to_levels(images) -> np.ndarray:
    """Float images in [-1, 1] (torch or numpy) → numpy uint8 levels (`common.images.to_uint8`)."""
    from fpa_export.common.images import to_uint8

    if hasattr(images, "detach"):
        images = images.detach().cpu()
    return np.asarray(to_uint8(images))


def folder_fidelity(reference_dir: Path, other_dir: Path, suffix: str = ".png") -> dict:
    """level_stats over every file name present in both folders (the same indices), plus counts."""
    from PIL import Image

    names = sorted(p.name for p in Path(reference_dir).iterdir() if p.suffix == suffix)
    shared = [name for name in names if (Path(other_dir) / name).is_file()]
    if not shared:
        raise ValueError(f"no {suffix} file names shared by {reference_dir} and {other_dir}")
    ref = np.stack([np.asarray(Image.open(Path(reference_dir) / name)) for name in shared])
    other = np.stack([np.asarray(Image.open(Path(other_dir) / name)) for name in shared])
    return {"files": len(shared), **level_stats(ref, other)}


def fidelity_text(stats: dict) -> str:
    verdict = "meets" if stats["passes"] else "FAILS"
    return (f"{100 * stats['within_2_fraction']:.3f} % of pixel values within {FIDELITY_WITHIN} levels, "
            f"mean {stats['mean_level']:.3f}, max {stats['max_level']} ({verdict} the tolerance: "
            f"≥ {100 * FIDELITY_FRACTION:.0f} % within {FIDELITY_WITHIN}, mean ≤ {FIDELITY_MEAN})")


TINY_PAPER = dict(image_size=8, num_steps=4, latent_size=16, mini_latent_size=2, input_size=8,
                  hidden_size=16)  # --tiny / --dry-run stand-in for the paper model: seconds, not minutes


def save_paper_checkpoint(path: Path, tiny: bool = False, seed: int = 0, **changes) -> Path:
    """The paper-size model (docs/MODEL.md §2 at T = 64: 64×64 RGB, LSTM 1024) with random weights, saved
    as a checkpoint of ours (speed does not depend on the weights). `tiny`: a toy config instead;
    `changes`: config fields to override (e.g. channels=1)."""
    import torch
    from fpa_export.models import FPAConfig, FPAGenerator, save_checkpoint

    torch.manual_seed(seed)
    config = FPAConfig(**{**(TINY_PAPER if tiny else {}), **changes})
    return Path(save_checkpoint(Path(path), FPAGenerator(config)))
