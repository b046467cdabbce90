"""What the visualisation commands accept as an image: a file, or one sample of an FPA model.

    photo.png              an image file (shorter side resized to `size`, then centre-cropped)
    default, default@7     the embedded model's sample for latent seed 0 (or 7)
    model.pt, model.pt@7   a checkpoint's sample (also .onnx / TensorRT engines, via fpa_export.runtime)

A sample's latent is z = torch.randn(1, latent_size, generator=torch.Generator().manual_seed(SEED));
the image is clamped to [0, 1] and quantised to uint8 like a saved PNG; greyscale is repeated to RGB.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fpa_export.common.images import IMAGE_SUFFIXES, load_image, resize_center_crop, to_hwc_array, to_uint8


def parse_source(spec: str, default_seed: int = 0) -> tuple[str, Optional[Path], int]:
    """'photo.png' → ('image', path, _); 'default@3' → ('model', None, 3);
    'm.pt' → ('model', path, default_seed)."""
    seed = default_seed
    head, _, tail = spec.rpartition("@")
    if head and tail.isdigit() and (head == "default" or Path(head).is_file()):
        spec, seed = head, int(tail)
    if spec == "default":
        return "model", None, seed
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{spec}: no such file (give an image, a checkpoint, or 'default')")
    kind = "image" if path.suffix.lower() in IMAGE_SUFFIXES else "model"
    return kind, path, seed


def load_source(spec: str, size: Optional[int] = None, seed: int = 0,
                backend: str = "torch") -> tuple[torch.Tensor, str]:
    """(image (1, 3, S, S) in [0, 1], a description). `size` None keeps a sample's own size and
    loads files at 64 px."""
    kind, path, seed = parse_source(spec, seed)
    if kind == "image":
        size = size or 64
        return load_image(path, size, 3)[None], f"{path.name} at {size} px"
    from ..runtime import make_sampler

    sampler = make_sampler(path, backend=backend)
    z = torch.randn(1, sampler.latent_size, generator=torch.Generator().manual_seed(seed))
    sample = to_uint8(sampler(z))[0]                                   # (C, S, S) uint8
    if size and size != sample.shape[-1]:
        from PIL import Image

        pil = resize_center_crop(Image.fromarray(to_hwc_array(sample)), size)
        array = np.asarray(pil, dtype=np.uint8).reshape(size, size, -1)
        sample = torch.from_numpy(array.copy()).permute(2, 0, 1)
    image = (sample.float() / 255.0).expand(3, -1, -1)[None].contiguous()
    name = "the embedded model" if path is None else path.name
    return image, f"sample {seed} of {name} at {image.shape[-1]} px"
