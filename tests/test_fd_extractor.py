"""The seeded random VGG-19: bit-identical across processes, distinct across seeds, no vanishing scale."""
from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from fpa_export.fd.features import (CONV_NAMES, FD_BASE_WIDTH, LAYER_NAMES, RandomVGG19, draw_conv_weight,
                               fd_features)

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import hashlib, sys, torch
torch.set_num_threads(1)
from fpa_export.fd.features import RandomVGG19, fd_features
net = RandomVGG19(seed=int(sys.argv[1]), base_width=16)
x = torch.linspace(0, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32).sin().abs()
with torch.no_grad():
    features = fd_features(net, x)
print(net.weights_sha256, net.extractor_id, hashlib.sha256(features.numpy().tobytes()).hexdigest())
"""


def probe_in_process(seed: int) -> list[str]:
    net = RandomVGG19(seed=seed, base_width=16)
    x = torch.linspace(0, 1, 2 * 3 * 32 * 32).reshape(2, 3, 32, 32).sin().abs()
    with torch.no_grad():
        features = fd_features(net, x)
    return [net.weights_sha256, net.extractor_id, hashlib.sha256(features.numpy().tobytes()).hexdigest()]


def test_same_seed_gives_identical_weights_and_features_in_another_process():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", PROBE, "7"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120, check=True).stdout.split()
    assert out == probe_in_process(7)
    assert probe_in_process(8)[0] != out[0]  # another seed, other weights
    assert out[1].endswith(out[0][:12]) and "seed7" in out[1]


def test_weights_follow_the_documented_scheme():
    net = RandomVGG19(seed=3, base_width=8)
    for name in CONV_NAMES:
        conv = net.convs[name]
        # each layer from its own generator: independent of the other layers' widths
        assert torch.equal(conv.weight, draw_conv_weight(3, name, conv.in_channels, conv.out_channels))
        if conv.weight.numel() > 2000:   # He scaling: std ≈ sqrt(2 / fan_in)
            expected = math.sqrt(2 / (9 * conv.in_channels))
            assert abs(float(conv.weight.std()) / expected - 1) < 0.1, name
    assert all(conv.bias is None and not conv.weight.requires_grad for conv in net.convs.values())


def test_activations_keep_their_scale_with_depth_unlike_a_fixed_small_std():
    x = torch.linspace(0, 1, 3 * 64 * 64).reshape(1, 3, 64, 64).mul(37).sin().add(1).div(2)
    net = RandomVGG19(seed=0, base_width=16)
    with torch.no_grad():
        he = net(x, LAYER_NAMES)
        generator = torch.Generator().manual_seed(1)
        for conv in net.convs.values():   # the N(0, 0.015²) draw of a public re-implementation
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.015)
        naive = net(x, LAYER_NAMES)
    rms = lambda a: float(a.square().mean().sqrt())  # noqa: E731
    assert rms(he["conv5_4"]) > 0.1 * rms(he["conv1_1"])
    assert rms(naive["conv5_4"]) < 1e-4 * rms(naive["conv1_1"])


def test_fd_features_shape_and_layer_balance():
    net = RandomVGG19(seed=0, base_width=FD_BASE_WIDTH)
    features = fd_features(net, torch.rand(4, 3, 32, 32))
    assert features.shape == (4, 2 * FD_BASE_WIDTH * (1 + 2 + 4 + 8 + 8))
    assert torch.isfinite(features).all()
