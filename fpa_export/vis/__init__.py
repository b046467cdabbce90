"""Deep visualisation with random-weight VGG-19 networks (He, Wang & Hopcroft, NIPS 2016).

    from fpa_export.fd.features import RandomVGG19
    from fpa_export.vis import invert, synthesize_texture, transfer_style, load_source
    image, _ = load_source("default@3", size=64)            # an FPA sample, or an image file
    result = invert(image, "conv3_1", RandomVGG19(seed=0))  # result.image, result.losses, result.frames
"""
from .invert import invert, psnr, stacked_network
from .optimize import Optimisation, lbfgs, white_noise
from .sources import load_source, parse_source
from .style import transfer_style
from .texture import synthesize_texture

__all__ = ["invert", "stacked_network", "psnr", "synthesize_texture", "transfer_style", "load_source",
           "parse_source", "Optimisation", "lbfgs", "white_noise"]
