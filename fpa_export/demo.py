"""The main job, end to end on the embedded default model (`make demo`):

    python -m fpa_export.demo --outdir out/demo

1. export the model to ONNX and verify the graph against PyTorch;
2. time PyTorch and onnxruntime on one batch and sample a few hundred images with the faster one;
3. render a sample grid, a painting GIF and the paper's step grid;
4. print where everything went.
"""
from __future__ import annotations

from pathlib import Path
import time

import click
import numpy as np
import torch

from fpa_export.common.cli import Command, friendly_errors
from fpa_export.export import DEFAULT_EXPORTER, EXPORTERS
from fpa_export.models import DEFAULT_MODEL

TIMING_BATCH = 64


def describe_model() -> str:
    from fpa_export.models import default_checkpoint_path, read_checkpoint

    ckpt = read_checkpoint(default_checkpoint_path())
    c = ckpt["config"]
    note = (ckpt.get("source") or {}).get("note")
    return (f"{c['image_size']}×{c['image_size']}×{c['channels']}, {c['num_steps']} steps, "
            f"LSTM {c['hidden_size']}, trained {ckpt['step']} steps" + (f" ({note})" if note else ""))


def export_verified(outdir: Path, exporter: str):
    """The image graph of the default model, checked by onnx.checker and against PyTorch."""
    from fpa_export.export import export_onnx

    return export_onnx(None, outdir / "default-image.onnx", graph="image", lstm="op", exporter=exporter)


def fastest_sampler(onnx_path: Path, painting_threads: int):
    """(sampler, {name: images/s}) — PyTorch eager and onnxruntime timed on the same batch, with the
    runtime threads that each of sampling's painting threads will use (`painting_plan`)."""
    from fpa_export.runtime import available_backends
    from fpa_export.sampling.pipeline import open_sampler, painting_plan, torch_threads

    threads = painting_plan("cpu", painting_threads)[1]

    candidates = [open_sampler(None, "torch", "cpu", threads)]
    if "onnx" in available_backends("cpu"):
        candidates.append(open_sampler(onnx_path, "onnx", "cpu", threads))
    z = torch.randn(TIMING_BATCH, candidates[0].latent_size, generator=torch.Generator().manual_seed(0))
    rates = {}
    with torch_threads(threads):
        for sampler in candidates:
            sampler(z)  # warm-up
            start = time.perf_counter()
            for _ in range(5):
                sampler(z)
            rates[sampler.name] = 5 * TIMING_BATCH / (time.perf_counter() - start)
    best = max(candidates, key=lambda s: rates[s.name])
    return best, rates


def _demo_manifest(folder: Path):
    """The samples.json of an earlier demo's samples in `folder` (the default model's), or None."""
    from fpa_export.common.errors import FpaError
    from fpa_export.sampling import manifest

    try:
        found = manifest.read(folder)
    except FpaError:
        return None  # not ours to replace: sample_folder says why, in one line
    model = found.get("model") if isinstance(found, dict) else None
    return found if isinstance(model, dict) and model.get("path") == DEFAULT_MODEL else None


def _earlier_larger_demo(folder: Path, n: int) -> bool:
    """True when `folder` holds an earlier demo's samples of the default model with more than `n`
    images: the demo replaces its own samples (`fpa-sample` refuses a smaller --n into a folder)."""
    found = _demo_manifest(folder)
    return found is not None and isinstance(found.get("n"), int) and found["n"] > n


PICTURES = ("samples_grid.png", "painting.gif", "painting_grid.png")  # the demo's pictures in --outdir


def check_pictures(outdir: Path) -> None:
    """Before any work: the demo's pictures may replace only files written here (`writers.check_output`)
    or, in an earlier demo's folder (samples of the default model), that demo's own pictures, which
    versions before the mark wrote unmarked: those are removed first. Anything else is one line."""
    from fpa_export.painting.writers import check_output, made_here

    ours = _demo_manifest(outdir / "samples") is not None
    for name in PICTURES:
        path = outdir / name
        if ours and path.is_file() and not made_here(path):
            path.unlink()  # an earlier demo's picture, from before pictures carried the mark
        check_output(path)


def write_sample_grid(folder: Path, out: Path, count: int = 64) -> Path:
    from fpa_export.painting import auto_scale, sample_grid, to_hwc, write_png
    from fpa_export.sampling.imagefiles import decode

    files = sorted(folder.glob("*.png"))[:count]
    arrays = [decode(path) for path in files]
    images = np.stack([a[None] if a.ndim == 2 else a.transpose(2, 0, 1) for a in arrays])
    return write_png(out, to_hwc(sample_grid(images, columns=8, scale=auto_scale(images.shape[-1]))))


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--outdir", type=click.Path(file_okay=False, path_type=Path), default=Path("out/demo"),
              show_default=True)
@click.option("--n", "n", type=click.IntRange(1), default=300, show_default=True,
              help="Samples to write (fewer than an earlier demo in --outdir wrote: its samples are "
                   "replaced).")
@click.option("--exporter", type=click.Choice(EXPORTERS), default=DEFAULT_EXPORTER, show_default=True,
              help="ONNX exporter (torchscript is faster to run, dynamo is the maintained one).")
@friendly_errors
def main(outdir: Path, n: int, exporter: str):
    """Export, verify, sample and animate the embedded default model; print where it all went.

    \b
    Examples:
      python -m fpa_export.demo --outdir out/demo
      python -m fpa_export.demo --outdir out/demo --n 100
    """
    from fpa_export.painting import PaintingJob, open_painter, render_painting
    from fpa_export.sampling import SampleRun, sample_folder

    start = time.perf_counter()
    check_pictures(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    click.echo(f"Model: the embedded default, {describe_model()}")
    click.echo("1/3 exporting to ONNX and verifying against PyTorch …")
    exported = export_verified(outdir, exporter)
    click.echo(f"    {exported.path}: max |onnxruntime − PyTorch| = {exported.max_abs_diff['image']:.1e}")
    run = SampleRun(outdir / "samples", n=n, seed=0, overwrite=_earlier_larger_demo(outdir / "samples", n))
    sampler, rates = fastest_sampler(exported.path, run.thread_counts()[0])
    speeds = ", ".join(f"{name} {rate:.0f} img/s" for name, rate in rates.items())
    click.echo(f"2/3 sampling {n} images with {sampler.name} (batch {TIMING_BATCH}: {speeds}) …")
    report = sample_folder(run, sampler=sampler)
    grid = write_sample_grid(report.outdir, outdir / PICTURES[0])
    click.echo("3/3 rendering the painting …")
    painter = open_painter(None)
    painting = render_painting(painter, PaintingJob(seeds=range(8)), gif=outdir / PICTURES[1])
    steps = render_painting(painter, PaintingJob(seeds=range(4)), grid=outdir / PICTURES[2])
    click.echo(f"\nDone in {time.perf_counter() - start:.0f} s:\n"
               f"  ONNX graph     {exported.path} (+ .json sidecar with the verification)\n"
               f"  samples        {report.outdir}/ ({report.written} written, {report.skipped} kept; "
               f"samples.json)\n"
               f"  sample grid    {grid}\n"
               f"  painting GIF   {painting.written['gif']} ({painting.frame_count} frames, 8 seeds)\n"
               f"  step grid      {steps.written['grid']} (rank-1 updates above partial sums, "
               f"seeds 0-3)\n"
               f"FID: python -m pytorch_fid REAL_DIR {report.outdir}  (pip install pytorch-fid with the "
               f"torchvision that matches your torch; see docs/FID.md)")


if __name__ == "__main__":
    main()
