"""A VGG-19-shaped network with seeded random weights ("ranVGG"; He, Wang & Hopcroft, NIPS 2016).

Used twice: as the feature extractor of the offline Fréchet distance (`fd_features`) and as the
network of the deep-visualisation tools (representation inversion, texture synthesis, style transfer).

Architecture: VGG-19's sixteen 3×3 convolutions (padding 1, stride 1), each followed by a ReLU, in five
blocks of 2, 2, 4, 4, 4 with 2×2 *average* pooling after each block (Gatys et al. use average pooling
for synthesis). Channels are base_width × (1, 2, 4, 8, 8): 64 is VGG-19 itself, the metric uses 16.
Layer names follow VGG: `conv3_1` is the rectified output of the first convolution of block 3.

Weight scheme (documented because the numbers depend on it): every convolution's weights are drawn
i.i.d. from N(0, 2 / fan_in) with fan_in = 9·C_in (He et al. 2015's fan-in scaling), biases are zero.
The factor 2 compensates the ReLU halving the second moment, so activations keep their scale with
depth instead of shrinking as they do with a fixed N(0, 0.015²) draw. Zero biases make the network
positively homogeneous: scaling the input scales every feature by the same factor.
Each layer draws from its own torch CPU generator whose seed is derived from (seed, layer, draw) with
SHA-256, so a layer's weights do not depend on the other layers' widths, and the "stacked ranVGG"
variant can try several draws per layer. Draw 0 is the plain network.
"""
from __future__ import annotations

import hashlib
import math
from typing import Iterable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fpa_export.common.errors import FpaError

BLOCKS = (2, 2, 4, 4, 4)           # convolutions per block, VGG-19
WIDTH_MULTIPLIERS = (1, 2, 4, 8, 8)
FD_BASE_WIDTH = 16                 # the metric's width: VGG-19 at a quarter of the channels
FD_LAYERS = ("conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4")  # last conv of each block
FEATURE_VERSION = "meanstd-v1"     # bump when fd_features changes: old statistics become incomparable


def layer_names() -> list[str]:
    """All layer names in order: conv1_1, conv1_2, pool1, conv2_1, ..., conv5_4, pool5."""
    names = []
    for block, count in enumerate(BLOCKS, start=1):
        names += [f"conv{block}_{i}" for i in range(1, count + 1)] + [f"pool{block}"]
    return names


LAYER_NAMES = tuple(layer_names())
CONV_NAMES = tuple(n for n in LAYER_NAMES if n.startswith("conv"))


def derived_seed(seed: int, layer: str, draw: int = 0) -> int:
    """A 63-bit generator seed for one layer's draw, the same on every platform and Python."""
    digest = hashlib.sha256(f"ranvgg19:{int(seed)}:{layer}:{int(draw)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def draw_conv_weight(seed: int, layer: str, in_channels: int, out_channels: int,
                     draw: int = 0) -> torch.Tensor:
    """One convolution's weights (C_out, C_in, 3, 3) from N(0, 2 / (9·C_in))."""
    generator = torch.Generator(device="cpu").manual_seed(derived_seed(seed, layer, draw))
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=generator, dtype=torch.float32)
    return weight * math.sqrt(2.0 / (9 * in_channels))


class RandomVGG19(nn.Module):
    """VGG-19 layout, random fixed weights. `forward(x, layers)` → {name: activation}.

    Inputs are images in [0, 1] with 3 channels, (B, 3, H, W); they are mapped to [-1, 1] first.
    `draws` optionally picks, per convolution name, which random draw to use (stacked ranVGG).
    """

    def __init__(self, seed: int = 0, base_width: int = 64, draws: Optional[dict[str, int]] = None):
        super().__init__()
        self.seed, self.base_width = int(seed), int(base_width)
        self.draws = {name: int((draws or {}).get(name, 0)) for name in CONV_NAMES}
        self.convs = nn.ModuleDict()
        in_channels = 3
        for block, count in enumerate(BLOCKS, start=1):
            out_channels = base_width * WIDTH_MULTIPLIERS[block - 1]
            for i in range(1, count + 1):
                name = f"conv{block}_{i}"
                conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
                conv.weight.data.copy_(draw_conv_weight(seed, name, in_channels, out_channels,
                                                        self.draws[name]))
                conv.weight.requires_grad_(False)
                self.convs[name] = conv
                in_channels = out_channels
        self.eval()

    def channels(self, layer: str) -> int:
        """Number of channels of a layer's output."""
        block = int(layer[4]) if layer.startswith("conv") else int(layer[4:])
        return self.base_width * WIDTH_MULTIPLIERS[block - 1]

    def set_draw(self, layer: str, draw: int) -> None:
        """Replace one convolution's weights by another random draw (stacked ranVGG)."""
        conv = self.convs[layer]
        conv.weight.data.copy_(draw_conv_weight(self.seed, layer, conv.in_channels,
                                                conv.out_channels, draw))
        self.draws[layer] = int(draw)

    @property
    def weights_sha256(self) -> str:
        """SHA-256 over every layer's name, shape and float32 little-endian bytes, in layer order."""
        digest = hashlib.sha256()
        for name, conv in self.convs.items():
            weight = conv.weight.detach().cpu().contiguous().float()
            digest.update(f"{name}:{tuple(weight.shape)};".encode())
            digest.update(weight.numpy().astype("<f4").tobytes())
        return digest.hexdigest()

    @property
    def architecture_id(self) -> str:
        """What the network is, without the seed: 'ranvgg19-w16-avg-he'."""
        stacked = "" if not any(self.draws.values()) else "-stacked"
        return f"ranvgg19-w{self.base_width}-avg-he{stacked}"

    @property
    def extractor_id(self) -> str:
        """Architecture, feature recipe, seed and weight hash: names one exact extractor."""
        return (f"{self.architecture_id}-{FEATURE_VERSION}-seed{self.seed}-"
                f"{self.weights_sha256[:12]}")

    def forward(self, images: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        """Activations of `layers` for images (B, 3, H, W) in [0, 1]; stops after the deepest one."""
        wanted = set(layers)
        unknown = wanted - set(LAYER_NAMES)
        if unknown:
            raise FpaError(f"unknown layer {sorted(unknown)[0]!r}; choose from {', '.join(LAYER_NAMES)}")
        last = max(LAYER_NAMES.index(name) for name in wanted)
        x = images * 2.0 - 1.0
        outputs = {}
        for name in LAYER_NAMES[:last + 1]:
            if name.startswith("conv"):
                x = F.relu(self.convs[name](x))
            else:
                x = F.avg_pool2d(x, 2)
            if name in wanted:
                outputs[name] = x
        return outputs


def fd_features(network: RandomVGG19, images: torch.Tensor,
                layers: Sequence[str] = FD_LAYERS) -> torch.Tensor:
    """Feature vectors (B, D) for the Fréchet distance: per layer, the channel means and channel
    standard deviations over positions. D = 2·ΣC (736 at width 16). Images (B, 3, H, W) in [0, 1].

    Layer l's 2·C_l features are scaled by sqrt(D / (L · 2·C_l)) (L layers): every layer then carries
    the same share of the total squared scale, which stays that of the unscaled features, instead of
    the widest layers outweighing the narrowest one 8 to 1.
    """
    activations = network(images, layers)
    total = 2 * sum(network.channels(name) for name in layers)
    parts = []
    for name in layers:
        flat = activations[name].flatten(2)                    # (B, C, H·W)
        mean, std = flat.mean(dim=2), flat.std(dim=2, unbiased=False)
        scale = math.sqrt(total / (len(layers) * 2 * flat.shape[1]))
        parts.append(torch.cat([mean, std], dim=1) * scale)   # (B, 2C)
    return torch.cat(parts, dim=1)                             # (B, D)
