"""`fpa-vis`: deep visualisation with random-weight VGG-19 networks (invert, texture, style).

Nothing heavy (torch, numpy, PIL) is imported before a command runs, so `--help` answers at once.
"""
from __future__ import annotations

from pathlib import Path

import click

from ..common.cli import Group, friendly_errors, nonempty_path, version_option

MAX_WIDTH = 256  # --width: the last blocks have 8 × 256 = 2,048 channels, 150 MB a convolution's weights


def _layers(text: str) -> list[str]:
    from fpa_export.fd.features import LAYER_NAMES

    layers = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in layers if name not in LAYER_NAMES]
    if unknown or not layers:
        raise click.BadParameter(f"unknown layer {unknown[0] if unknown else text!r}; "
                                 f"choose from {', '.join(LAYER_NAMES)}")
    return layers


def common_options(func):
    """Options every command shares: output, sizes, seeds, network width, iterations, GIF."""
    options = [
        click.option("-o", "--out", type=click.Path(dir_okay=False), callback=nonempty_path,
                     default=None,
                     help="Picture to write: .png or .jpg.  [default: invert_<LAYER>.png, texture.png "
                          "or style.png]"),
        click.option("--gif", type=click.Path(dir_okay=False), callback=nonempty_path, default=None,
                     help="Also write an animation of the optimisation: .gif, .png (animated PNG) or "
                          ".mp4."),
        click.option("--frames", type=click.IntRange(min=2), default=40, show_default=True,
                     help="About how many animation frames."),
        click.option("--duration", type=click.IntRange(min=20), default=80, show_default=True,
                     help="Animation frame duration in milliseconds."),
        click.option("--scale", type=click.IntRange(min=1, max=16), default=1, show_default=True,
                     help="Nearest-neighbour upscaling of the written picture and animation."),
        click.option("--size", type=click.IntRange(min=16), default=None,
                     show_default="a sample's own size; 64 for image files",
                     help="Working resolution in pixels."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of FPA samples given without '@SEED': image 0 under this seed, as "
                          "000000.png of `fpa-sample --seed`."),
        click.option("--net-seed", type=click.IntRange(0), default=0, show_default=True,
                     help="Seed of the random network's weights."),
        click.option("--width", type=click.IntRange(min=4, max=MAX_WIDTH), default=64, show_default=True,
                     help="Channels of the first block (64 = VGG-19; smaller is faster; the last blocks "
                          "have 8 times as many)."),
        click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True,
                     help="L-BFGS iterations."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _output(command: str, out, gif, frames, duration, scale):
    from ..vis.commands import Output

    return Output(png=out or Path(f"{command}.png"), gif=gif, frames=frames, duration_ms=duration,
                  scale=scale)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("fpa-vis")
def main():
    """Deep visualisation with UNTRAINED VGG-19 networks (He, Wang & Hopcroft 2016).

    Every image argument is an image file or an FPA sample: 'default' (the embedded model), a
    checkpoint, an .onnx image graph or an engine, optionally with '@SEED' ('default@7',
    'model.pt@3'): image 0 under that seed, the same image as `fpa-sample --seed 7` writes first.

    \b
    Examples:
      fpa-vis invert default@3 --layer conv2_1 --size 64 --gif invert.gif
      fpa-vis texture brick.png --steps 300 -o brick_texture.png
      fpa-vis style photo.png default@5 --style-weight 0.5
    """


@main.command()
@click.argument("source")
@click.option("--layer", default="conv3_1", show_default=True, help="Layer whose features are matched.")
@click.option("--stacked", type=click.IntRange(min=0), default=0, show_default=True,
              help="Stacked ranVGG: for every convolution up to --layer keep the best of K draws.")
@click.option("--stacked-steps", type=click.IntRange(min=1), default=30, show_default=True,
              help="L-BFGS iterations of each trial inversion when --stacked is used.")
@common_options
@friendly_errors
def invert(source, layer, stacked, stacked_steps, out, gif, frames, duration, scale, size, seed,
           net_seed, width, steps):
    """Reconstruct SOURCE from white noise by matching one layer's features.

    SOURCE is an image file or an FPA sample (see fpa-vis --help).

    \b
    Examples:
      fpa-vis invert photo.png --layer conv1_2          # near-perfect
      fpa-vis invert default@3 --layer conv4_1 --stacked 4 --gif inv.gif --scale 4
    """
    from ..vis.commands import run_invert

    _layers(layer)
    output = _output(f"invert_{layer}", out, gif, frames, duration, scale)
    click.echo(run_invert(source, output, layer, size, seed, net_seed, width, steps, stacked, stacked_steps))


@main.command()
@click.argument("source")
@click.option("--layers", default="conv1_1,pool1,pool2,pool3,pool4", show_default=True,
              help="Layers whose Gram matrices are matched (weights are set automatically).")
@click.option("--out-size", type=click.IntRange(min=16), default=None,
              show_default="the source's size", help="Size of the synthesised texture.")
@common_options
@friendly_errors
def texture(source, layers, out_size, out, gif, frames, duration, scale, size, seed, net_seed, width,
            steps):
    """Synthesise a new texture with the Gram statistics of SOURCE.

    \b
    Examples:
      fpa-vis texture brick.png --size 128 --out-size 192
      fpa-vis texture default@2 --gif texture.gif --scale 4
    """
    from ..vis.commands import run_texture

    output = _output("texture", out, gif, frames, duration, scale)
    click.echo(run_texture(source, output, _layers(layers), size, out_size, seed, net_seed, width, steps))


@main.command()
@click.argument("content")
@click.argument("style_source", metavar="STYLE")
@click.option("--content-layer", default="conv3_2", show_default=True,
              help="Layer whose features keep the content (the paper: conv4_2, on large images).")
@click.option("--style-layers", default="conv1_1,conv2_1,conv3_1,conv4_1,conv5_1", show_default=True)
@click.option("--style-weight", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Style terms' share of the initial gradient relative to content.")
@common_options
@friendly_errors
def style(content, style_source, content_layer, style_layers, style_weight, out, gif, frames, duration,
          scale, size, seed, net_seed, width, steps):
    """Repaint CONTENT with the style (Gram statistics) of STYLE.

    \b
    Examples:
      fpa-vis style photo.png painting.png --size 128
      fpa-vis style big_photo.png painting.png --size 256 --content-layer conv4_2
      fpa-vis style default@1 default@2 --gif style.gif --scale 4
    """
    from ..vis.commands import run_style

    _layers(content_layer)
    output = _output("style", out, gif, frames, duration, scale)
    click.echo(run_style(content, style_source, output, content_layer, _layers(style_layers),
                         style_weight, size, seed, net_seed, width, steps))


if __name__ == "__main__":  # pragma: no cover
    main()
