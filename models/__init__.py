"""The networks of fpa-export: the Fast Weight Painter, its U-Net, their configs and checkpoints.

Imports only torch, and that on first use of a name that needs it: the configs, the version and the
embedded model's path import without torch (sampling an exported graph never imports it). Everything
else in the project (training, export, sampling, GIFs) builds on this.
"""
from importlib import import_module
from pathlib import Path

from fpa_export.common.version import PACKAGE_VERSION
from .config import ConfigError, FPAConfig, UNetConfig

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "default_model.pt"
DEFAULT_MODEL = "default"  # the embedded model's name on every command line and in samples.json
_LAZY = {  # name → the module (importing torch) that defines it
    **dict.fromkeys(("canvas_from_writes", "delta_rule", "delta_rule_writes", "partial_sums",
                     "rank_one_updates"), "delta"),
    **dict.fromkeys(("FPAGenerator", "Painting"), "fpa"),
    "fold_step_input": "fold",
    **dict.fromkeys(("CheckpointError", "load_checkpoint", "make_checkpoint", "read_checkpoint",
                     "save_checkpoint"), "checkpoint"),
    **dict.fromkeys(("describe", "describe_config"), "summary"),
}


def default_checkpoint_path() -> Path:
    """The embedded default model, shipped as package data beside this file."""
    return DEFAULT_CHECKPOINT


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConfigError", "DEFAULT_MODEL", "FPAConfig", "UNetConfig", "FPAGenerator", "Painting", "fold_step_input",
    "delta_rule", "delta_rule_writes", "canvas_from_writes", "rank_one_updates", "partial_sums",
    "CheckpointError", "PACKAGE_VERSION", "default_checkpoint_path", "describe", "load_checkpoint", "make_checkpoint",
    "read_checkpoint", "save_checkpoint",
]
