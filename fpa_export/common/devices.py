"""Device strings, validated once for every command: `cpu`, `cuda`, `cuda:N`, `mps` (where torch has it).

`check_device("cuda")` on a CPU-only torch raises one line (FpaError) naming what is missing, instead of
torch's "Torch not compiled with CUDA enabled" traceback deep inside a run.
"""
from __future__ import annotations

from pathlib import Path
import re

from .errors import FpaError

DEVICE_HELP = "cpu, cuda, cuda:N or mps"


def device_type(device) -> str:
    """'cpu', 'cuda' or 'mps' of a device string or torch.device, without importing torch."""
    return str(getattr(device, "type", device)).strip().lower().split(":")[0]


def device_index(device) -> int:
    """The index of a CUDA device string or torch.device ('cuda' → 0, 'cuda:1' → 1)."""
    if not isinstance(device, str):
        return device.index or 0
    return int(device.split(":")[1]) if ":" in device else 0


def check_device(text: str) -> str:
    """The canonical device string for `text`, or FpaError if it is malformed or absent here (the CPU
    needs no torch to check)."""
    name = str(text).strip().lower()
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise FpaError(f"unknown device {text!r}: use {DEVICE_HELP}")
    if name == "cpu":
        return name
    import torch

    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            why = ("this torch is a CPU-only build" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise FpaError(f"device {text!r} is not available: {why}; use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise FpaError(f"device {text!r} is not available: this machine has "
                           f"{torch.cuda.device_count()} CUDA device(s)")
    if name == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise FpaError("device 'mps' is not available here; use --device cpu")
    return name


def device_option(ctx, param, value):
    """click callback: validate a --device value (None passes through)."""
    if value is None:
        return value
    try:
        return check_device(value)
    except FpaError as err:
        import click

        raise click.BadParameter(str(err)) from None


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset:
    """The instruction-set flags this CPU reports (the first `flags` line of /proc/cpuinfo); empty when
    they cannot be read (another OS)."""
    try:
        text = Path(cpuinfo).read_text(encoding="ascii", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()
