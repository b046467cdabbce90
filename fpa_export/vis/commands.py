"""One function per `fpa-vis` command: load the image(s), run the optimisation, write PNG (+ GIF).

Each returns a one-line summary for the command line to print.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from fpa_export.fd.features import RandomVGG19
from .invert import invert, psnr, stacked_network
from .optimize import Optimisation
from .output import write_animation, write_picture
from .sources import check_size, load_source
from .style import transfer_style
from .texture import synthesize_texture


@dataclass
class Output:
    """Where and how to write: picture path (.png/.jpg), optional animation path (.gif/.png/.mp4),
    frames, upscaling. Names whose suffix is no format we write are refused here, before any work."""
    png: Path
    gif: Optional[Path] = None
    frames: int = 40              # about this many animation frames over the optimisation
    duration_ms: int = 80
    scale: int = 1

    def __post_init__(self):
        from ..common.atomic import check_outputs, check_writable
        from ..painting.writers import animation_format, picture_format

        picture_format(self.png)
        if self.gif is not None:
            animation_format(self.gif)
        check_outputs({"the picture": self.png, "the animation": self.gif})
        for target in (self.png, self.gif):  # a read-only folder fails now, not after the work
            if target is not None:
                check_writable(target)

    def check_sources(self, *sources: str) -> None:
        """Before any work: no output overwrites a source image (`invert photo.png -o photo.png`), lands
        in a sample folder or replaces a file that fpa-export did not write."""
        from ..common.atomic import check_outputs
        from ..painting.writers import check_output

        check_outputs({"the picture": self.png, "the animation": self.gif},
                      {f"the source image {source}": source for source in sources})
        for target in (self.png, self.gif):
            if target is not None:
                check_output(target)

    def frame_every(self, steps: int) -> int:
        return max(1, steps // self.frames) if self.gif else 0

    def write(self, result: Optimisation) -> str:
        write_picture(self.png, result.image, self.scale)
        if self.gif:
            write_animation(self.gif, result.frames + [result.image], self.duration_ms, self.scale)
            return f"{self.png} and {self.gif}"
        return str(self.png)


def _loss_text(result: Optimisation, steps: int) -> str:
    return f"loss {result.initial_loss:.3g} → {result.final_loss:.3g} in {steps} L-BFGS iterations"


def run_invert(source: str, output: Output, layer: str = "conv3_1", size: Optional[int] = None,
               seed: int = 0, net_seed: int = 0, width: int = 64, steps: int = 200,
               stacked: int = 0, stacked_steps: int = 30) -> str:
    """`fpa-vis invert`: reconstruct `source` from its `layer` features, from white noise."""
    output.check_sources(source)
    target, described = load_source(source, size, seed)
    chosen = ""
    if stacked > 1:
        network, choices = stacked_network(target, layer, stacked, net_seed, width, stacked_steps)
        chosen = "; stacked ranVGG chose draws " + ", ".join(f"{c.layer}:{c.chosen}" for c in choices)
    else:
        network = RandomVGG19(seed=net_seed, base_width=width)
    result = invert(target, layer, network, steps=steps, frame_every=output.frame_every(steps))
    where = output.write(result)
    return (f"Wrote {where}: {described} inverted from {layer} of {network.architecture_id} seed "
            f"{net_seed}; {_loss_text(result, steps)}; PSNR {psnr(result.image, target):.1f} dB{chosen}")


def run_texture(source: str, output: Output, layers: Sequence[str], size: Optional[int] = None,
                out_size: Optional[int] = None, seed: int = 0, net_seed: int = 0, width: int = 64,
                steps: int = 200) -> str:
    """`fpa-vis texture`: a new image with the Gram statistics of `source`."""
    output.check_sources(source)
    check_size(out_size, "--out-size")
    image, described = load_source(source, size, seed)
    network = RandomVGG19(seed=net_seed, base_width=width)
    result, _ = synthesize_texture(image, network, layers, size=out_size, steps=steps,
                                   frame_every=output.frame_every(steps))
    where = output.write(result)
    return (f"Wrote {where}: texture of {described} ({', '.join(layers)}; {network.architecture_id} "
            f"seed {net_seed}); {_loss_text(result, steps)}")


def run_style(content: str, style: str, output: Output, content_layer: str, style_layers: Sequence[str],
              style_weight: float = 1.0, size: Optional[int] = None, seed: int = 0, net_seed: int = 0,
              width: int = 64, steps: int = 200) -> str:
    """`fpa-vis style`: `content` repainted with the Gram statistics of `style`."""
    output.check_sources(content, style)
    content_image, content_text = load_source(content, size, seed)
    style_image, style_text = load_source(style, content_image.shape[-1], seed)
    network = RandomVGG19(seed=net_seed, base_width=width)
    result, _ = transfer_style(content_image, style_image, network, content_layer, style_layers,
                               style_weight, steps=steps, frame_every=output.frame_every(steps))
    where = output.write(result)
    return (f"Wrote {where}: {content_text} in the style of {style_text} ({network.architecture_id} "
            f"seed {net_seed}); {_loss_text(result, steps)}")
