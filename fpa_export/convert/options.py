"""The options of an official-checkpoint conversion and their defaults (the paper's recipe).

Kept free of torch so that `fpa-convert --help` can show them without importing it.
"""
from __future__ import annotations

MODEL_TYPES = ("lstm_delta_split_v2", "lstm_delta", "lstm_delta_split_v2_unet", "lstm_delta_unet")
WEIGHTS = ("GE", "G")
# The paper's recipe (official README flags: --use_softmax --out_tanh --v2_input_sigmoid, --unet_tanh for
# the U-Net stage); the U-Net widths are hard-coded in the official code.
DEFAULTS = {
    "key_softmax": True,   # official --use_softmax
    "out_tanh": True,      # official --out_tanh (the final tanh, after the U-Net when there is one)
    "input_tanh": True,    # official --v2_input_sigmoid (which applies tanh); v2 only
    "unet_tanh": True,     # official --unet_tanh: tanh before the U-Net
    "value_tanh": False,   # official --val_tanh
    "lr_sigmoid": True,    # official --no_sigmoid_lr turns it off
    "unet_groups": 8,      # GroupNorm groups of the official U-Net
    "unet_heads": 4,       # attention heads of the official U-Net
    "unet_dim_head": 32,   # channels per head
    "image_size": None,    # None: inferred (and checked when given)
    "channels": None,
}
