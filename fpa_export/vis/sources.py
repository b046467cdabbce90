"""What the visualisation commands accept as an image: a file, or one sample of an FPA model.

    photo.png              an image file (shorter side resized to `size`, then centre-cropped)
    default, default@7     the embedded model's sample under seed 0 (or 7)
    model.pt, model.pt@7   a checkpoint's sample; also an exported image graph (.onnx) or a TensorRT
                           engine, each run by its own runtime (the choice `fpa-gif` makes)

The seed rule is the project's one (`fpa_export.sampling.latents_for`): `X@S` is image index 0 under
seed S, the same image as 000000.png of `fpa-sample X --seed S` and the painting of `fpa-gif X --seeds S`.
Without '@' the seed is `--seed` (default 0). The image is clamped to [0, 1] and quantised to uint8 like
a saved PNG; greyscale is repeated to RGB.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fpa_export.common.errors import FpaError, not_a_file
from fpa_export.common.images import IMAGE_SUFFIXES, load_image, resize_center_crop, to_hwc_array, to_uint8
from fpa_export.models import DEFAULT_MODEL


def parse_source(spec: str, default_seed: int = 0) -> tuple[str, Optional[Path], int]:
    """'photo.png' → ('image', path, _); 'default@3' → ('model', None, 3);
    'm.pt' → ('model', path, default_seed)."""
    seed = default_seed
    head, _, tail = spec.rpartition("@")
    if head and (head == DEFAULT_MODEL or Path(head).is_file()) and not Path(spec).is_file():
        if not tail.isdigit():  # 'default@x', 'model.pt@-1': the seed is wrong, not the file
            raise FpaError(f"{spec}: the seed after '@' is a non-negative integer (e.g. {head}@7)")
        spec, seed = head, int(tail)
    if spec == DEFAULT_MODEL:
        return "model", None, seed
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"{not_a_file(spec)} (give an image, a checkpoint, or 'default')")
    kind = "image" if path.suffix.lower() in IMAGE_SUFFIXES else "model"
    return kind, path, seed


def model_sample(path: Optional[Path], seed: int) -> torch.Tensor:
    """uint8 (C, S, S): image index 0 under `seed` of a checkpoint, .onnx image graph or engine (None:
    the embedded model), each on the runtime its file type calls for."""
    from fpa_export.runtime.factory import make_sampler
    from fpa_export.sampling.latents import latents_for

    sampler = make_sampler(path, purpose="images")  # torch for checkpoints, the file's runtime for exports
    z = latents_for([0], seed=seed, latent_size=sampler.latent_size)
    try:
        with torch.inference_mode():
            return to_uint8(sampler(z))[0]
    except NotImplementedError:
        raise FpaError(f"{path}: fpa-vis needs an image graph; export one with `fpa-export onnx "
                       f"--graph image`, or give the checkpoint") from None


MAX_SIZE = 1024  # px a side: at 1024 one 64-channel VGG activation is 256 MiB, and L-BFGS keeps many


def check_size(size: Optional[int], what: str = "--size") -> None:
    """One line for a working size the optimisation could not hold in memory (`--size 100000` ran
    until the kernel killed it)."""
    if size is not None and size > MAX_SIZE:
        raise FpaError(f"{what} {size} px: at most {MAX_SIZE} px a side (the optimisation keeps every "
                       "VGG activation of the image)")


def load_source(spec: str, size: Optional[int] = None, seed: int = 0) -> tuple[torch.Tensor, str]:
    """(image (1, 3, S, S) in [0, 1], a description). `size` None keeps a sample's own size and
    loads files at 64 px."""
    check_size(size)
    kind, path, seed = parse_source(spec, seed)
    if kind == "image":
        size = size or 64
        return load_image(path, size, 3)[None], f"{path.name} at {size} px"
    sample = model_sample(path, seed)                                  # (C, S, S) uint8
    if size and size != sample.shape[-1]:
        from PIL import Image

        pil = resize_center_crop(Image.fromarray(to_hwc_array(sample)), size)
        array = np.asarray(pil, dtype=np.uint8).reshape(size, size, -1)
        sample = torch.from_numpy(array.copy()).permute(2, 0, 1)
    image = (sample.float() / 255.0).expand(3, -1, -1)[None].contiguous()
    name = "the embedded model" if path is None else path.name
    return image, f"image 0 of seed {seed} of {name} at {image.shape[-1]} px"
