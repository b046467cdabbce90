"""The U-Net that refines a finished painting (docs/MODEL.md §5, the `*_unet` variants of the paper).

The image of a U-Net model is tanh(U(tanh(W_T))); this file holds U, a lucidrains-style U-Net
(denoising-diffusion-pytorch, as vendored in the official IDSIA/fpainter code) without time conditioning.
The tanh around it belongs to the caller (`FPAGenerator`).

Layout, for dims = [dim, dim·m_1, …, dim·m_L] and L = len(dim_mults) levels:
  init_conv 7×7 (C → dim), kept as the skip `r` of the output head;
  down level i: ResNet(dims[i] → dims[i+1]), ResNet, residual pre-normed linear attention, 4×4 stride-2
    conv (identity at the last level); the attention output is the level's skip;
  middle: ResNet, residual pre-normed full softmax attention, ResNet;
  up level i, mirroring down level j = L-1-i: concat skip j, ResNet(2·dims[j+1] → dims[j]), ResNet,
    linear attention, 4×4 stride-2 transposed conv (identity at the last level);
  head: concat r, ResNet(2·dim → dim), 1×1 conv to C.

Module and attribute names (`downs.0.2.fn.fn.to_qkv`, `mid_attn.fn.norm.g`, …) are the official ones, so
an official checkpoint's `u_net.*` tensors load after stripping the prefix. The official generator builds
it as Unet(dim=image_size, dim_mults=(1, 2, …, max_unet_dim), channels=C), with 4 heads × 32 everywhere.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from fpa_export.common.errors import FpaError
from .config import UNetConfig


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W), with gain `g` and bias `b` shaped (1, C, 1, 1)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.b = nn.Parameter(torch.zeros(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Biased variance as a mean of squares rather than torch.var(unbiased=False): equal up to float
        # rounding (~1 ulp), and torch.onnx's dynamo exporter otherwise pins the batch axis of a B=1 sample.
        mean = x.mean(dim=1, keepdim=True)                 # (B, 1, H, W)
        var = (x - mean).pow(2).mean(dim=1, keepdim=True)  # (B, 1, H, W)
        return (x - mean) / torch.sqrt(var + self.eps) * self.g + self.b


class PreNorm(nn.Module):
    """fn(norm(x)). Kept as its own module because the checkpoint names it: `<attn>.fn.norm`, `.fn.fn`."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = fn
        self.norm = ChannelLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Residual(nn.Module):
    """x + fn(x)."""

    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) + x


class ConvNormAct(nn.Module):
    """conv 3×3 → GroupNorm → SiLU: the official `Block`, whose keys are `proj.*` and `norm.*`."""

    def __init__(self, dim_in: int, dim_out: int, groups: int):
        super().__init__()
        self.proj = nn.Conv2d(dim_in, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.norm(self.proj(x)))


class ResnetBlock(nn.Module):
    """Two ConvNormAct blocks plus a skip, 1×1-projected when the channel count changes."""

    def __init__(self, dim_in: int, dim_out: int, groups: int):
        super().__init__()
        self.block1 = ConvNormAct(dim_in, dim_out, groups)
        self.block2 = ConvNormAct(dim_out, dim_out, groups)
        self.res_conv = nn.Conv2d(dim_in, dim_out, 1) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x)) + self.res_conv(x)


def split_heads(qkv: torch.Tensor, heads: int, dim_head: int):
    """(B, 3·heads·dim_head, H, W) → q, k, v, each (B, heads, dim_head, H·W).

    Channels are ordered [q | k | v], and inside each, head-major (channel = head·dim_head + d).
    """
    # -1 keeps the batch axis symbolic for export.
    qkv = qkv.reshape(-1, 3, heads, dim_head, qkv.shape[-2] * qkv.shape[-1])  # (B, 3, heads, dim_head, H*W)
    q, k, v = qkv.unbind(dim=1)  # each (B, heads, dim_head, H*W)
    return q, k, v


class LinearAttention(nn.Module):
    """Linear attention (softmax over features for queries, over positions for keys), cost O(H·W).

    The output projection is followed by a channel LayerNorm (`to_out.1`), as in the official code.
    """

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head ** -0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, 3 * hidden, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), ChannelLayerNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        query, key, value = split_heads(self.to_qkv(x), self.heads, self.dim_head)
        query = query.softmax(dim=-2) * self.scale  # over dim_head
        key = key.softmax(dim=-1)                   # over positions
        context = key @ value.transpose(-1, -2)     # (B, heads, dim_head(key), dim_head(value))
        out = context.transpose(-1, -2) @ query     # (B, heads, dim_head(value), H*W)
        out = out.reshape(-1, self.heads * self.dim_head, height, width)  # (B, heads*dim_head, H, W)
        return self.to_out(out)


class Attention(nn.Module):
    """Full softmax attention over all H·W positions (the middle of the U-Net only)."""

    def __init__(self, dim: int, heads: int, dim_head: int):
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head ** -0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, 3 * hidden, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        query, key, value = split_heads(self.to_qkv(x), self.heads, self.dim_head)
        # The official code subtracts the row max before the softmax; softmax already does (bit-identical).
        sim = (query * self.scale).transpose(-1, -2) @ key  # (B, heads, H*W(query), H*W(key))
        attn = sim.softmax(dim=-1)
        out = value @ attn.transpose(-1, -2)                # (B, heads, dim_head, H*W)
        out = out.reshape(-1, self.heads * self.dim_head, height, width)  # (B, heads*dim_head, H, W)
        return self.to_out(out)


class UNet(nn.Module):
    """U(x): (B, C, S, S) → (B, C, S, S), S divisible by 2**(len(dim_mults) - 1). No output activation."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        c = config
        if c.dim_mults[0] != 1:  # the head concatenates the init-conv features (dim) with the up path's
            raise FpaError(f"dim_mults must start with 1 (the official head needs it), got {c.dim_mults}")
        dims = [c.dim] + [c.dim * m for m in c.dim_mults]
        pairs = list(zip(dims[:-1], dims[1:]))  # (dim_in, dim_out) per level
        last = len(pairs) - 1

        self.init_conv = nn.Conv2d(c.channels, c.dim, 7, padding=3)
        self.downs = nn.ModuleList([
            self._level(dim_in, dim_out,
                        nn.Conv2d(dim_out, dim_out, 4, 2, 1) if i < last else nn.Identity())
            for i, (dim_in, dim_out) in enumerate(pairs)])
        self.mid_block1 = ResnetBlock(dims[-1], dims[-1], c.resnet_groups)
        self.mid_attn = Residual(PreNorm(dims[-1], Attention(dims[-1], c.attn_heads, c.attn_dim_head)))
        self.mid_block2 = ResnetBlock(dims[-1], dims[-1], c.resnet_groups)
        self.ups = nn.ModuleList([
            self._level(2 * dim_out, dim_in,
                        nn.ConvTranspose2d(dim_in, dim_in, 4, 2, 1) if i < last else nn.Identity())
            for i, (dim_in, dim_out) in enumerate(reversed(pairs))])
        self.final_res_block = ResnetBlock(2 * c.dim, c.dim, c.resnet_groups)
        self.final_conv = nn.Conv2d(c.dim, c.channels, 1)

    def _level(self, block_in: int, width: int, resample: nn.Module) -> nn.ModuleList:
        """[ResNet(block_in → width), ResNet(width), residual linear attention, resample]: indices 0–3
        are the checkpoint's `downs.i.k` / `ups.i.k`."""
        c = self.config
        return nn.ModuleList([
            ResnetBlock(block_in, width, c.resnet_groups),
            ResnetBlock(width, width, c.resnet_groups),
            Residual(PreNorm(width, LinearAttention(width, c.attn_heads, c.attn_dim_head))),
            resample,
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.init_conv(x)  # (B, dim, S, S)
        init_features = x
        skips = []
        for block1, block2, attn, downsample in self.downs:
            x = attn(block2(block1(x)))
            skips.append(x)
            x = downsample(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x)))
        for block1, block2, attn, upsample in self.ups:
            x = torch.cat((x, skips.pop()), dim=1)  # current features first, then the skip
            x = upsample(attn(block2(block1(x))))
        x = torch.cat((x, init_features), dim=1)  # (B, 2*dim, S, S)
        return self.final_conv(self.final_res_block(x))
