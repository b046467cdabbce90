"""The refinement U-Net (docs/MODEL.md §5): parameter count, official state_dict layout, shapes, numerics.

The numerics are checked against a float64 functional re-implementation that reads the weights by their
official key names and loops over attention heads, so it shares no code with `models.unet`.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fpa_export.models.config import UNetConfig
from fpa_export.models.unet import Attention, LinearAttention, PreNorm, Residual, UNet

torch.set_num_threads(1)

TINY = dict(dim=8, dim_mults=(1, 2), resnet_groups=4, attn_heads=2, attn_dim_head=4)


def tiny_unet(seed: int = 0, **changes) -> UNet:
    torch.manual_seed(seed)
    return UNet(UNetConfig(**{"channels": 1, **TINY, **changes})).eval()


def perturbed(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Jitter every parameter so that norm gains/biases are not 1/0 and a swapped weight shows."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


# ---------------------------------------------------------------- the official layout, written out

def official_layout(channels, dim, dim_mults, heads=4, dim_head=32):
    """{key: shape} of the official Unet(dim, dim_mults, channels) of IDSIA/fpainter's code/unet.py."""
    shapes = {}
    hidden = heads * dim_head

    def conv(name, cin, cout, k, bias=True):
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            shapes[f"{name}.bias"] = (cout,)

    def resnet(name, cin, cout):
        for block, block_in in (("block1", cin), ("block2", cout)):
            conv(f"{name}.{block}.proj", block_in, cout, 3)
            shapes[f"{name}.{block}.norm.weight"] = shapes[f"{name}.{block}.norm.bias"] = (cout,)
        if cin != cout:
            conv(f"{name}.res_conv", cin, cout, 1)

    def chan_norm(name, d):
        shapes[f"{name}.g"] = shapes[f"{name}.b"] = (1, d, 1, 1)

    def attention(name, d, linear):
        chan_norm(f"{name}.fn.norm", d)
        conv(f"{name}.fn.fn.to_qkv", d, 3 * hidden, 1, bias=False)
        conv(f"{name}.fn.fn.to_out.0" if linear else f"{name}.fn.fn.to_out", hidden, d, 1)
        if linear:
            chan_norm(f"{name}.fn.fn.to_out.1", d)

    dims = [dim] + [dim * m for m in dim_mults]
    n = len(dim_mults)
    conv("init_conv", channels, dim, 7)
    for i in range(n):
        resnet(f"downs.{i}.0", dims[i], dims[i + 1])
        resnet(f"downs.{i}.1", dims[i + 1], dims[i + 1])
        attention(f"downs.{i}.2", dims[i + 1], linear=True)
        if i < n - 1:
            conv(f"downs.{i}.3", dims[i + 1], dims[i + 1], 4)
    resnet("mid_block1", dims[-1], dims[-1])
    attention("mid_attn", dims[-1], linear=False)
    resnet("mid_block2", dims[-1], dims[-1])
    for i in range(n):
        level = n - 1 - i
        resnet(f"ups.{i}.0", 2 * dims[level + 1], dims[level])
        resnet(f"ups.{i}.1", dims[level], dims[level])
        attention(f"ups.{i}.2", dims[level], linear=True)
        if i < n - 1:
            conv(f"ups.{i}.3", dims[level], dims[level], 4)  # ConvTranspose2d: (in, out, k, k), square
    resnet("final_res_block", 2 * dim, dim)
    conv("final_conv", dim, channels, 1)
    return shapes


def test_paper_configuration_parameter_count():
    unet = UNet(UNetConfig(channels=3, dim=64, dim_mults=(1, 2, 4)))
    assert sum(p.numel() for p in unet.parameters() if p.requires_grad) == 7_985_475
    layout = official_layout(3, 64, (1, 2, 4))
    assert sum(math.prod(shape) for shape in layout.values()) == 7_985_475
    assert layout["ups.0.0.block1.proj.weight"] == (128, 512, 3, 3)
    assert layout["mid_attn.fn.fn.to_qkv.weight"] == (384, 256, 1, 1)


@pytest.mark.parametrize("channels, dim_mults", [(1, (1, 2)), (3, (1, 2, 4)), (3, (1,))])
def test_state_dict_has_the_official_keys_and_shapes(channels, dim_mults):
    unet = tiny_unet(channels=channels, dim_mults=dim_mults)
    got = {key: tuple(value.shape) for key, value in unet.state_dict().items()}
    assert got == official_layout(channels, 8, dim_mults, heads=2, dim_head=4)


def test_official_weights_load_after_stripping_the_prefix():
    source = perturbed(tiny_unet(seed=3))
    official = {f"u_net.{key}": value for key, value in source.state_dict().items()}
    target = tiny_unet(seed=4)
    target.load_state_dict({key.removeprefix("u_net."): v for key, v in official.items()}, strict=True)
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(target(x), source(x), rtol=0, atol=0)


def test_first_multiplier_must_be_one():
    with pytest.raises(ValueError, match="dim_mults must start with 1"):
        tiny_unet(dim_mults=(2, 4))


# ---------------------------------------------------------------- shapes and batch independence

@pytest.mark.parametrize("size", [8, 16])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_with_batch_one(size, channels):
    unet = tiny_unet(channels=channels)
    y = unet(torch.randn(1, channels, size, size))
    assert y.shape == (1, channels, size, size)
    assert torch.isfinite(y).all()


def test_samples_do_not_mix_across_the_batch():
    unet = perturbed(tiny_unet(dim_mults=(1, 2, 4)))
    torch.manual_seed(5)
    x = torch.randn(3, 1, 16, 16)
    whole = unet(x)
    for i in range(3):
        torch.testing.assert_close(whole[i:i + 1], unet(x[i:i + 1]), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- float64 reference

def ref_conv(sd, name, x, **kwargs):
    return F.conv2d(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"), **kwargs)


def ref_chan_norm(sd, name, x):
    var = torch.var(x, dim=1, unbiased=False, keepdim=True)
    return (x - x.mean(dim=1, keepdim=True)) / (var + 1e-5).sqrt() * sd[f"{name}.g"] + sd[f"{name}.b"]


def ref_resnet(sd, name, x, groups):
    h = x
    for block in ("block1", "block2"):
        h = ref_conv(sd, f"{name}.{block}.proj", h, padding=1)
        h = F.group_norm(h, groups, sd[f"{name}.{block}.norm.weight"], sd[f"{name}.{block}.norm.bias"])
        h = h * torch.sigmoid(h)
    skip = ref_conv(sd, f"{name}.res_conv", x) if f"{name}.res_conv.weight" in sd else x
    return h + skip


def ref_attention(sd, name, x, heads, dim_head, linear):
    """Residual pre-normed attention, one head at a time, softmax written out as exp / sum."""
    b, _, height, width = x.shape
    hidden = heads * dim_head
    qkv = ref_conv(sd, f"{name}.fn.fn.to_qkv", ref_chan_norm(sd, f"{name}.fn.norm", x)).flatten(2)
    outs = []
    for h in range(heads):
        q, k, v = (qkv[:, part * hidden + h * dim_head: part * hidden + (h + 1) * dim_head]
                   for part in range(3))  # each (b, dim_head, n)
        if linear:
            q = q.exp() / q.exp().sum(dim=1, keepdim=True) / math.sqrt(dim_head)
            k = k.exp() / k.exp().sum(dim=2, keepdim=True)
            outs.append(torch.einsum("bde,bdn->ben", torch.einsum("bdn,ben->bde", k, v), q))
        else:
            sim = torch.einsum("bdi,bdj->bij", q / math.sqrt(dim_head), k)
            attn = (sim - sim.amax(dim=2, keepdim=True)).exp()
            attn = attn / attn.sum(dim=2, keepdim=True)
            outs.append(torch.einsum("bij,bdj->bdi", attn, v))
    out = torch.cat(outs, dim=1).reshape(b, hidden, height, width)
    if linear:
        out = ref_chan_norm(sd, f"{name}.fn.fn.to_out.1", ref_conv(sd, f"{name}.fn.fn.to_out.0", out))
    else:
        out = ref_conv(sd, f"{name}.fn.fn.to_out", out)
    return x + out


def ref_unet(sd, x, cfg: UNetConfig):
    g, heads, dh, n = cfg.resnet_groups, cfg.attn_heads, cfg.attn_dim_head, len(cfg.dim_mults)
    x = first = ref_conv(sd, "init_conv", x, padding=3)
    skips = []
    for i in range(n):
        x = ref_resnet(sd, f"downs.{i}.1", ref_resnet(sd, f"downs.{i}.0", x, g), g)
        skips.append(x := ref_attention(sd, f"downs.{i}.2", x, heads, dh, linear=True))
        if f"downs.{i}.3.weight" in sd:
            x = ref_conv(sd, f"downs.{i}.3", x, stride=2, padding=1)
    x = ref_resnet(sd, "mid_block1", x, g)
    x = ref_resnet(sd, "mid_block2", ref_attention(sd, "mid_attn", x, heads, dh, linear=False), g)
    for i in range(n):
        x = torch.cat([x, skips.pop()], dim=1)
        x = ref_resnet(sd, f"ups.{i}.1", ref_resnet(sd, f"ups.{i}.0", x, g), g)
        x = ref_attention(sd, f"ups.{i}.2", x, heads, dh, linear=True)
        if f"ups.{i}.3.weight" in sd:
            x = F.conv_transpose2d(x, sd[f"ups.{i}.3.weight"], sd[f"ups.{i}.3.bias"], stride=2, padding=1)
    x = ref_resnet(sd, "final_res_block", torch.cat([x, first], dim=1), g)
    return ref_conv(sd, "final_conv", x)


@pytest.mark.parametrize("module_class, linear", [(LinearAttention, True), (Attention, False)])
def test_attention_matches_a_per_head_float64_loop(module_class, linear):
    torch.manual_seed(0)
    block = torch.nn.Sequential()  # stand-in parent so the keys read `<name>.fn.fn.*`, `<name>.fn.norm.*`
    block.add_module("a", Residual(PreNorm(12, module_class(12, heads=3, dim_head=5))))
    block = perturbed(block).double()
    x = torch.randn(2, 12, 4, 6, dtype=torch.float64)
    expected = ref_attention(block.state_dict(), "a", x, 3, 5, linear)
    torch.testing.assert_close(block(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels, dim_mults, size", [(1, (1, 2), 8), (3, (1, 2, 4), 16)])
def test_unet_matches_a_float64_functional_reference(channels, dim_mults, size):
    unet = perturbed(tiny_unet(channels=channels, dim_mults=dim_mults)).double()
    torch.manual_seed(7)
    x = torch.randn(2, channels, size, size, dtype=torch.float64)
    expected = ref_unet(unet.state_dict(), x, unet.config)
    torch.testing.assert_close(unet(x), expected, rtol=1e-9, atol=1e-9)
