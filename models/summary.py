"""One-line descriptions of checkpoints and configs for the command lines (plain dicts in, no torch)."""
from __future__ import annotations

from typing import Any


def describe(ckpt: dict) -> str:
    """One-line summary of a checkpoint dict for command lines: model, step and the EMA's state."""
    return (f"{describe_config(ckpt.get('config') or {})}, step {ckpt.get('step', '?')}, "
            + _describe_ema(ckpt.get("ema")))


def describe_config(c: dict) -> str:
    """The model of a config dict in one phrase: 'FPA v2 32 px × 1 ch, T=16, H=256, d=128'."""
    unet = c.get("unet")
    parts = [f"FPA {c.get('input_generator', '?')} {c.get('image_size', '?')} px × {c.get('channels', '?')} ch",
             f"T={c.get('num_steps', '?')}", f"H={c.get('hidden_size', '?')}", f"d={c.get('latent_size', '?')}"]
    if isinstance(unet, dict):
        parts.append(f"U-Net dim {unet.get('dim', '?')}")
    return ", ".join(parts)


def _describe_ema(ema: Any) -> str:
    if not isinstance(ema, dict):
        return "EMA: not recorded"
    if ema.get("started") is None:
        reset = ema.get("last_reset")
        return "EMA: none (a copy of G" + (f" at step {reset})" if reset is not None else ")")
    since = max(ema["started"], ema.get("last_reset") or 0)  # a later reset restarts the average
    return f"EMA: averaging since step {since}"


