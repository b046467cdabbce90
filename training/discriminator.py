"""The discriminator of lightweight-gan as the official FPA code uses it (docs/MODEL.md §6), scaled to S.

Residual stages halve the image until the feature map is 8×8; stage channels are min(2^(12−n), fmap_max)
at resolution 2^n (3→128→256→512 at S = 64), the first stage takes the image channels. A pre-normed
linear attention sits before the stage whose input width is listed in `attn_res_layers` (32 by default).
Logits come from a 3×3 stride-2 conv → LeakyReLU → 4×4 conv (the official `disc_output_size=1`); a
second small head looks at the image resized to 32×32; a decoder reconstructs the input from the 8×8
features (auxiliary MSE loss, computed on real images only). No blur (docs/MODEL.md §6).
Sizes of 512 px and more are refused: there the official D has non-residual first layers and a second
decoder, which this module does not build.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fpa_export.common.errors import FpaError

BOTTOM_SIZE = 8  # side of the last feature map, whatever the image size
MAX_IMAGE_SIZE = 256  # lightweight-gan's D differs from here on at >= 512 px (refused, not imitated)


class ChannelNorm(nn.Module):
    """Normalise every pixel's feature vector over channels, with a learned gain and bias."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=1, unbiased=False, keepdim=True)
        return (x - mean) / (var + self.eps).sqrt() * self.gain + self.bias


class LinearAttention(nn.Module):
    """lightweight-gan's attention: global linear attention plus 3×3-neighbourhood softmax attention."""

    def __init__(self, dim: int, dim_head: int = 64, heads: int = 8, kernel_size: int = 3):
        super().__init__()
        self.heads, self.dim_head, self.kernel_size = heads, dim_head, kernel_size
        self.scale = dim_head ** -0.5
        inner = dim_head * heads
        self.to_lin_q = nn.Conv2d(dim, inner, 1, bias=False)
        self.to_lin_kv = nn.Sequential(  # depth-wise 3×3, then point-wise
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False),
            nn.Conv2d(dim, inner * 2, 1, bias=False))
        self.to_q = nn.Conv2d(dim, inner, 1, bias=False)
        self.to_kv = nn.Conv2d(dim, inner * 2, 1, bias=False)
        self.to_out = nn.Conv2d(inner * 2, dim, 1)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, _, height, width = t.shape
        return t.reshape(b * self.heads, self.dim_head, height * width)  # (B·h, d, N)

    def _linear(self, fmap: torch.Tensor) -> torch.Tensor:
        q = self._heads(self.to_lin_q(fmap)).softmax(dim=1) * self.scale  # softmax over features
        k, v = (self._heads(t) for t in self.to_lin_kv(fmap).chunk(2, dim=1))
        k = k.softmax(dim=2)  # softmax over positions
        context = torch.bmm(k, v.transpose(1, 2))  # (B·h, d, d)
        out = torch.bmm(context.transpose(1, 2), q)  # (B·h, d, N)
        return F.gelu(out.reshape(fmap.shape[0], -1, *fmap.shape[2:]))

    def _local(self, fmap: torch.Tensor) -> torch.Tensor:
        """Softmax attention of each pixel over its k×k neighbourhood (zero-padded at the borders).

        The neighbours are visited as k² shifted copies of the zero-padded keys and values, which is
        the same arithmetic as unfolding them, without the k²-times larger unfolded tensors.
        """
        b, _, height, width = fmap.shape
        size, pad = self.kernel_size, self.kernel_size // 2
        shape = (b * self.heads, self.dim_head, height, width)
        q = self.to_q(fmap).reshape(shape) * self.scale  # (B·h, d, H, W)
        k, v = (F.pad(t.reshape(shape), (pad, pad, pad, pad)) for t in self.to_kv(fmap).chunk(2, dim=1))
        offsets = [(dy, dx) for dy in range(size) for dx in range(size)]
        sim = torch.stack([(q * k[:, :, dy:dy + height, dx:dx + width]).sum(dim=1)
                           for dy, dx in offsets], dim=1)  # (B·h, k², H, W)
        attn = (sim - sim.amax(dim=1, keepdim=True).detach()).softmax(dim=1)
        out = sum(attn[:, j:j + 1] * v[:, :, dy:dy + height, dx:dx + width]
                  for j, (dy, dx) in enumerate(offsets))  # (B·h, d, H, W)
        return out.reshape(b, -1, height, width)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return self.to_out(torch.cat([self._linear(fmap), self._local(fmap)], dim=1))


class ResidualAttention(nn.Module):
    """x + Attention(ChannelNorm(x))."""

    def __init__(self, dim: int, heads: int = 8, dim_head: int = 64):
        super().__init__()
        self.norm = ChannelNorm(dim)
        self.attn = LinearAttention(dim, dim_head=dim_head, heads=heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.norm(x))


class DownStage(nn.Module):
    """Halve the size: (4×4 stride-2 conv → LReLU → 3×3 conv → LReLU) + (avg-pool → 1×1 conv → LReLU)."""

    def __init__(self, chan_in: int, chan_out: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(chan_in, chan_out, 4, stride=2, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(chan_out, chan_out, 3, padding=1), nn.LeakyReLU(0.1))
        self.skip = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(chan_in, chan_out, 1), nn.LeakyReLU(0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.skip(x)


class SimpleDecoder(nn.Module):
    """Four (upsample ×2 → 3×3 conv → GLU) blocks: 8×8 features → a 128×128 reconstruction."""

    def __init__(self, chan_in: int, chan_out: int, num_upsamples: int = 4):
        super().__init__()
        layers, chans = [], chan_in
        for index in range(num_upsamples):
            out = chan_out * 2 if index == num_upsamples - 1 else chans
            layers += [nn.Upsample(scale_factor=2), nn.Conv2d(chans, out, 3, padding=1), nn.GLU(dim=1)]
            chans //= 2
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def stage_channels(image_size: int, channels: int, fmap_max: int) -> list[int]:
    """Channels at resolutions S, S/2, …, 8: the image channels, then min(2^(12−n), fmap_max)."""
    top = int(math.log2(image_size))
    return [channels] + [min(2 ** (12 - n), fmap_max) for n in range(top - 1, 2, -1)]


class MinibatchStd(nn.Module):
    """ProGAN's minibatch standard deviation (optional; not in the paper's D): appends one channel, the
    mean feature std over each group of `group` consecutive samples. Groups are consecutive so that a
    batch laid out as [reals, fakes] (both multiples of the group) never mixes the two."""

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = math.gcd(b, self.group)
        std = (x.reshape(b // g, g, c, h, w).var(dim=1, unbiased=False) + 1e-8).sqrt()
        feature = std.mean(dim=(1, 2, 3)).repeat_interleave(g).view(b, 1, 1, 1).expand(b, 1, h, w)
        return torch.cat([x, feature], dim=1)


def stage_widths(image_size: int) -> list[int]:
    """The input widths of the residual stages (S, S/2, …, 16): where `attn_res_layers` can place
    attention (the 8-px output of the last stage feeds the logits)."""
    return [image_size >> shift for shift in range(image_size.bit_length()) if image_size >> shift >= 16]


class Discriminator(nn.Module):
    """D(x) → (logits (B, 1), logits of the 32-px head (B, 1), aux MSE or None)."""

    def __init__(self, image_size: int, channels: int, fmap_max: int = 512,
                 attn_res_layers: tuple[int, ...] = (32,), attn_heads: int = 8, attn_dim_head: int = 64,
                 minibatch_std: int = 0):
        super().__init__()
        attention = lambda dim: ResidualAttention(dim, attn_heads, attn_dim_head)  # noqa: E731
        if image_size < 16 or image_size & (image_size - 1):
            raise FpaError(f"the discriminator needs a power-of-two image size >= 16, got {image_size}")
        if image_size > MAX_IMAGE_SIZE:
            raise FpaError(f"image size {image_size}: the official discriminator changes its layout at "
                           f">= 512 px (non-residual first layers, a second decoder), which is not "
                           f"implemented; train at {MAX_IMAGE_SIZE} px or less")
        chans = stage_channels(image_size, channels, fmap_max)
        self.stages = nn.ModuleList()
        self.attentions = nn.ModuleList()
        widths = stage_widths(image_size)
        assert len(widths) == len(chans) - 1
        for width, chan_in, chan_out in zip(widths, chans[:-1], chans[1:]):
            self.attentions.append(attention(chan_in) if width in attn_res_layers
                                   else nn.Identity())
            self.stages.append(DownStage(chan_in, chan_out))
        last = chans[-1]
        std = [MinibatchStd(minibatch_std)] if minibatch_std > 1 else []
        self.to_logits = nn.Sequential(*std, nn.Conv2d(last + len(std), last, 3, stride=2, padding=1),
                                       nn.LeakyReLU(0.1), nn.Conv2d(last, 1, 4))
        self.head_32 = nn.Sequential(
            nn.Conv2d(channels, 64, 3, padding=1), attention(64), DownStage(64, 32), attention(32), nn.AdaptiveAvgPool2d((4, 4)), nn.Conv2d(32, 1, 4))
        self.decoder = SimpleDecoder(last, channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan-in) weights on every conv and linear layer, as lightweight-gan."""
        for module in self.modules():
            if type(module) in (nn.Conv2d, nn.Linear):
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in", nonlinearity="leaky_relu")

    def forward(self, images: torch.Tensor, aux_count: int = 0):
        """aux_count > 0: also the reconstruction MSE of the first `aux_count` images (the reals)."""
        x = images
        for attention, stage in zip(self.attentions, self.stages):
            x = stage(attention(x))  # (B, c, s/2, s/2); ends at (B, last, 8, 8)
        logits = self.to_logits(x).flatten(1)  # (B, 1)
        logits_32 = self.head_32(F.interpolate(images, size=(32, 32))).flatten(1)  # (B, 1)
        if aux_count == 0:
            return logits, logits_32, None
        recon = self.decoder(x[:aux_count])  # (n, C, 128, 128)
        target = F.interpolate(images[:aux_count], size=recon.shape[2:])
        return logits, logits_32, F.mse_loss(recon, target)
