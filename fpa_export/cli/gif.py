"""`fpa-gif`: animate how a Fast Weight Painter paints, rank-1 update by rank-1 update."""
from __future__ import annotations

from pathlib import Path

import click

from fpa_export.cli import ModelPath
from fpa_export.common.cli import (Command, UserError, check_applies, friendly_errors, nonempty_path,
                                   version_option)
from fpa_export.common.devices import device_option
from fpa_export.runtime.names import PRECISIONS

# = painting.layout.MODES, painting.render.MAX_SCALE and MIN_FPS, painting.writers.MAX_DELAY_MS
# (a test checks);
# not imported: a fast --help
MODES = ("partial", "updates", "both")
MAX_SCALE = 16
MIN_FPS = 0.02
MAX_DELAY_MS = 60_000

DEFAULT_GIF = Path("painting.gif")


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@version_option("fpa-gif")
@click.argument("model", required=False, type=ModelPath())
@click.option("--seed", type=click.IntRange(0), default=None, help="One seed  [default: 0]")
@click.option("--seeds", default=None, metavar="LIST",
              help="Several seeds tiled into one animation: 0-7, 1,4,9 or 0-3,8.")
@click.option("--index", type=click.IntRange(0), default=0, show_default=True,
              help="Image index under each seed: the painting of {index:06d}.png of `fpa-sample "
                   "--seed S`.")
@click.option("-o", "--out", type=click.Path(dir_okay=False), callback=nonempty_path, default=None,
              help=f"Output GIF  [default: {DEFAULT_GIF}, unless only --grid/--mp4 is asked]")
@click.option("--mode", type=click.Choice(MODES), default="partial", show_default=True,
              help="partial: the canvas after t steps; updates: the t-th rank-1 update; both: updates "
                   "above partial sums (the paper's layout).")
@click.option("--fps", type=click.FloatRange(MIN_FPS), default=8.0, show_default=True,
              help="Frames per second (GIF delays are multiples of 10 ms, at least 20 ms; a frame "
                   "lasts at most a minute).")
@click.option("--scale", type=click.IntRange(0, MAX_SCALE), default=0, show_default="0 = tiles of ≥ 64 px",
              help="Nearest-neighbour upscaling factor.")
@click.option("--hold-last", "hold_last_ms", type=click.IntRange(0, MAX_DELAY_MS), default=1500,
              show_default=True, help="How long the last frame stays, in milliseconds.")
@click.option("--columns", type=click.IntRange(1), default=8, show_default=True,
              help="Seeds per row of the animation.")
@click.option("--grid", type=click.Path(dir_okay=False), callback=nonempty_path, default=None,
              help="Also write the paper's static step grid (2 rows × T columns per seed): .png or .jpg.")
@click.option("--mp4", type=click.Path(dir_okay=False), callback=nonempty_path, default=None,
              help="Also write an MP4 (needs the [video] extra: imageio-ffmpeg).")
@click.option("--truncation", "--trunc", "truncation", type=float, default=1.0, show_default=True,
              help="psi in (0, 1], as in fpa-sample.")
@click.option("--backend", type=click.Choice(["auto", "torch", "onnx", "trt"]), default="auto",
              show_default=True, help="auto: torch for checkpoints, the matching runtime for a "
                                      "steps .onnx graph or engine.")
@click.option("--device", default="cpu", show_default=True, callback=device_option, help="cpu, cuda, cuda:N or mps.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              show_default="fp32; an exported graph: its own",
              help="bf16: CUDA or a CPU with bf16 instructions; fp16: CUDA (probed against fp32 first).")
@friendly_errors
def main(model, seed, seeds, index, out, mode, fps, scale, hold_last_ms, columns, grid, mp4,
         truncation, backend, device, precision):
    """Animate the painting of MODEL: frame t shows the image after t rank-1 updates.

    MODEL is a checkpoint or a `steps` graph from `fpa-export onnx --graph steps`; omitted, the
    embedded default model. Every frame of a seed is rescaled to the norm of that seed's finished
    canvas (per sample, never across seeds), then squashed by tanh like the image.

    \b
    Examples:
      fpa-gif                                        # painting.gif of the default model, seed 0
      fpa-gif model.pt --seeds 0-7 -o paint.gif --mode both
      fpa-gif model.pt --seed 3 --grid steps.png     # the paper's 2×T step grid only
      fpa-gif model.pt --seeds 0-3 --precision bf16  # painted in bf16, verified against fp32
      fpa-gif model-steps.onnx --seeds 0-3 --fps 12 --scale 4 --mp4 paint.mp4
    """
    from fpa_export.painting import PaintingJob, open_painter, render_painting
    from fpa_export.sampling import parse_seed_range

    if seed is not None and seeds is not None:
        raise UserError("give --seed or --seeds, not both")
    seed_list = parse_seed_range(seeds) if seeds is not None else [seed or 0]
    if out is None and grid is None and mp4 is None:
        out = DEFAULT_GIF
    for name in ("fps", "hold_last_ms", "mode", "columns"):  # the step grid is a still of its own layout
        check_applies(name, out is not None or mp4 is not None, "to an animation (-o or --mp4)")
    check_applies("columns", len(seed_list) > 1, "to an animation of several seeds (--seeds)")
    job = PaintingJob(seeds=seed_list, index=index, mode=mode, fps=fps, scale=scale,
                      hold_last_ms=hold_last_ms, columns=columns, truncation=truncation)
    job.check()
    from fpa_export.runtime.modelfile import open_model

    model = open_model(model)  # decided and loaded once
    try:
        painter = open_painter(model, backend, device, precision)
        result = render_painting(painter, job, gif=out, grid=grid, mp4=mp4,
                                 inputs={"the model": model.path})
    except ImportError as err:
        raise UserError(str(err)) from None
    except NotImplementedError as err:
        raise UserError(f"{err}") from None
    click.echo(f"Model {model.summary}", err=True)
    width, height = result.frame_size
    movies = " and ".join(str(result.written[k]) for k in ("gif", "mp4") if k in result.written)
    parts = [f"{movies} ({result.frame_count} frames of {width}×{height}, {len(seed_list)} seed(s))"
             ] if movies else []
    if "grid" in result.written:
        parts.append(f"step grid {result.written['grid']}")
    click.echo("Wrote " + "; ".join(parts))


if __name__ == "__main__":  # pragma: no cover
    main()
