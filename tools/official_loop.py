"""The baselines the benchmarks compare against, written here on purpose and only here.

- `OfficialStyleSampler`: the shape of the official IDSIA/fpainter sampling loop — `nn.LSTM`, then a
  Python loop over the T steps that keeps each S×S canvas W explicit and does two batched matmuls per
  step (retrieve W k_t, add u_t k_tᵀ), in eager PyTorch.
- `save_image_like_torchvision`: how the official FID loop saves each image (torchvision's
  `save_image` on one image: a greyscale image is widened to RGB by `make_grid`, then ×255 + 0.5,
  clamp, uint8, Pillow PNG at its default compression).
- `plain_loop` / `official_loop`: the two whole sampling scripts `tools/bench_sample.py` runs as fresh
  processes — what a user writes with `load_generator()` and Pillow, and the official loop's shape.

Imported by the benchmark scripts in this folder only (nothing in the package imports tools/).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch


class OfficialStyleSampler:
    """nn.LSTM + a Python loop of S×S canvas updates by bmm, in eager PyTorch (the official loop)."""

    name = "official-style (eager)"

    def __init__(self, generator, device: str = "cpu"):
        self.generator = generator.to(device).eval()
        self.device = device

    @torch.inference_mode()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        g, c = self.generator, self.generator.config
        z = z.to(self.device)
        batch, size, width = z.shape[0], c.image_size, c.channels * c.image_size
        hidden = g.lstm(g._lstm_inputs(z), g._initial_state(z))[0]  # (B, T, H)
        raw = g.kvb(g.wide(hidden) if c.wide_out_dim else hidden)  # (B, T, C·(2S + r))
        canvas = z.new_zeros(batch * c.channels, size, size)  # (B·C, S, S): W, kept explicit
        for t in range(c.num_steps):
            key, value, lr = raw[:, t].split([width, width, c.channels * c.lr_size], dim=1)
            key = key.reshape(-1, size)  # (B·C, S)
            key = torch.softmax(key, dim=1) if c.key_softmax else key
            value = value.reshape(-1, size)
            value = torch.tanh(value) if c.value_tanh else value
            lr = lr.reshape(-1, c.lr_size)
            lr = torch.sigmoid(lr) if c.lr_sigmoid else lr
            if t > 0:  # delta rule on the explicit canvas: retrieve W k, write β(v − W k)
                value = lr * (value - torch.bmm(canvas, key.unsqueeze(2)).squeeze(2))
            canvas = canvas + torch.bmm(value.unsqueeze(2), key.unsqueeze(1))
        return g.finish(canvas.reshape(batch, c.channels, size, size)).float().cpu()


def save_image_like_torchvision(image: torch.Tensor, path: Path) -> None:
    """One (C, S, S) image in [-1, 1] saved as torchvision.utils.save_image does for a single image."""
    from PIL import Image

    if image.shape[0] == 1:  # make_grid turns a single-channel image into three channels
        image = torch.cat((image, image, image), 0)
    array = image.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()
    Image.fromarray(array).save(path)


def plain_loop(model: Optional[str], n: int, batch_size: int, outdir: Path) -> None:
    """What a user writes: `load_generator()`, eager batches, each image saved with Pillow."""
    from PIL import Image
    from fpa_export import load_generator

    generator = load_generator(model)
    torch.manual_seed(0)
    outdir.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            images = generator(torch.randn(min(batch_size, n - start), generator.latent_size))
            pixels = (images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
            for j, array in enumerate(pixels):
                Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(
                    outdir / f"{start + j:06d}.png")


def official_loop(model: Optional[str], n: int, batch_size: int, outdir: Path) -> None:
    """The official FID loop's shape: the official-style generator, then save_image per image."""
    from fpa_export import load_generator

    sampler = OfficialStyleSampler(load_generator(model))
    torch.manual_seed(0)
    outdir.mkdir(parents=True, exist_ok=True)
    for start in range(0, n, batch_size):
        images = sampler(torch.randn(min(batch_size, n - start), sampler.generator.latent_size))
        for j, image in enumerate(images.unbind(0)):
            save_image_like_torchvision(image, outdir / f"{start + j}-ema.png")


BASELINES = {"plain": plain_loop, "official": official_loop}
