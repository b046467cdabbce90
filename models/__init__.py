"""The networks of fpa-export: the Fast Weight Painter, its U-Net, their configs and checkpoints.

Imports only torch. Everything else in the project (training, export, sampling, GIFs) builds on this.
"""
from .config import ConfigError, FPAConfig, UNetConfig
from .delta_rule import canvas_from_writes, delta_rule, delta_rule_writes, partial_sums, rank_one_updates
from .fpa import FPAGenerator, Painting
from .checkpoint import (CheckpointError, PACKAGE_VERSION, default_checkpoint_path, describe,
                         load_checkpoint, make_checkpoint,
                         read_checkpoint, save_checkpoint)

__all__ = [
    "ConfigError", "FPAConfig", "UNetConfig", "FPAGenerator", "Painting",
    "delta_rule", "delta_rule_writes", "canvas_from_writes", "rank_one_updates", "partial_sums",
    "CheckpointError", "PACKAGE_VERSION", "default_checkpoint_path", "describe", "load_checkpoint", "make_checkpoint",
    "read_checkpoint", "save_checkpoint",
]
