"""Benchmark end-to-end `fpa-sample --n N` against an official-style sampling pipeline, in one run.

Every contender is a fresh subprocess writing N PNG files into an empty folder, timed from the outside
(Python start-up, imports and model loading included, as a user sees it); the contenders alternate for
`--repeats` rounds and the table reports medians and ratios of that one run.

The baseline is written here on purpose and only here: the shape of the official IDSIA/fpainter FID
sampling loop — eager PyTorch generation of one batch, then each image saved one after another the way
torchvision's `save_image` does it (a greyscale image is widened to RGB by `make_grid`, then ×255 + 0.5,
clamp, uint8, Pillow PNG at its default compression). Same model, same N, same batch size.

    python tools/bench_sample.py                    # default model, N = 5000, batch 64
    python tools/bench_sample.py --n 2000 --repeats 2 --json-out bench.json
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import statistics
import subprocess
import sys
import tempfile
import time

import click
import torch

BIN = Path(sys.executable).parent


# -- the baseline we compare against ----------------------------------------------------------------
def save_image_like_torchvision(image: torch.Tensor, path: Path) -> None:
    """One (C, S, S) image in [-1, 1] saved as torchvision.utils.save_image does for a single image."""
    from PIL import Image

    if image.shape[0] == 1:  # make_grid turns a single-channel image into three channels
        image = torch.cat((image, image, image), 0)
    array = image.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to("cpu", torch.uint8).numpy()
    Image.fromarray(array).save(path)


def official_style(model: str | None, n: int, batch_size: int, outdir: Path) -> None:
    from fpa_export import load_generator

    generator = load_generator(model)
    torch.manual_seed(0)
    outdir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            images = generator(torch.randn(min(batch_size, n - start), generator.latent_size))
            for j, image in enumerate(images.unbind(0)):
                save_image_like_torchvision(image, outdir / f"{start + j}-ema.png")


# -- the harness -------------------------------------------------------------------------------------
BASELINE = "official-style (eager torch, save one by one)"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def contenders(model: str | None, n: int, batch_size: int) -> dict[str, tuple[list[str], dict]]:
    """name → (command, environment overrides). The first entry is the reference of the ratios."""
    model_args = [model] if model else []
    ours = [str(BIN / "fpa-sample"), *model_args, "--n", str(n), "--batch-size", str(batch_size)]
    baseline = [sys.executable, __file__, "--baseline", "--n", str(n), "--batch-size", str(batch_size)]
    baseline += ["--model", model] if model else []
    return {
        BASELINE: (baseline, {}),
        BASELINE + ", OMP_NUM_THREADS=1": (baseline, ONE_THREAD),
        "fpa-sample (auto backend)": (ours, {}),
        "fpa-sample --backend torch": (ours + ["--backend", "torch"], {}),
    }


def timed(command: list[str], env: dict, outdir: Path, n: int) -> float:
    """Wall time of one run into `outdir`, a folder that must not exist yet. Every run gets a fresh
    folder and nothing is deleted until the end: on file systems mounted with `discard`, creating
    files right after deleting thousands of others is several times slower, which would tax whichever
    contender runs after a deletion."""
    start = time.perf_counter()
    subprocess.run(command + ["--outdir", str(outdir)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, env={**os.environ, **env})
    seconds = time.perf_counter() - start
    files = sum(1 for p in outdir.iterdir() if p.suffix == ".png")
    if files != n:
        raise RuntimeError(f"{command[0]} wrote {files} images, expected {n}")
    return seconds


def run_benchmark(model, n, batch_size, repeats, workdir: Path) -> dict:
    calls = contenders(model, n, batch_size)
    cold = timed(*calls["fpa-sample (auto backend)"], workdir / "cold", n)  # exports into the empty cache
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(repeats):
        for k, (name, (command, env)) in enumerate(calls.items()):
            times[name].append(timed(command, env, workdir / f"run-{round_}-{k}", n))
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians[BASELINE]
    return {"n": n, "batch_size": batch_size, "repeats": repeats, "model": model or "default",
            "cpu_count": os.cpu_count(), "load_average_after": os.getloadavg(),
            "first_run_with_export_s": cold, "seconds": times, "median_s": medians,
            "speedup": {name: base / value for name, value in medians.items()}}


def table(result: dict) -> str:
    lines = ["| pipeline | median wall time (s) | images/s | speed-up vs official-style |",
             "|---|---:|---:|---:|"]
    for name, seconds in result["median_s"].items():
        lines.append(f"| {name} | {seconds:.2f} | {result['n'] / seconds:.0f} | "
                     f"{result['speedup'][name]:.2f}× |")
    lines.append(f"\nN = {result['n']}, batch {result['batch_size']}, {result['repeats']} alternating "
                 f"rounds, {result['cpu_count']} CPU cores, load average after the run "
                 f"{result['load_average_after'][0]:.1f}; the first `fpa-sample` run, which exports the "
                 f"ONNX graph into an empty cache, took {result['first_run_with_export_s']:.2f} s.")
    return "\n".join(lines)


@click.command()
@click.option("--model", default=None, help="Checkpoint  [default: the embedded model]")
@click.option("--n", "n", type=click.IntRange(1), default=5000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
@click.option("--baseline", is_flag=True, hidden=True)
@click.option("--outdir", type=click.Path(path_type=Path), hidden=True)
def main(model, n, batch_size, repeats, json_out, baseline, outdir):
    """Time `fpa-sample --n N` against the official-style pipeline (one table, one run)."""
    if baseline:
        official_style(model, n, batch_size, outdir)
        return
    with tempfile.TemporaryDirectory(prefix="bench-sample-") as tmp:
        os.environ["FPA_EXPORT_CACHE"] = str(Path(tmp) / "cache")
        result = run_benchmark(model, n, batch_size, repeats, Path(tmp))
    click.echo(table(result))
    if json_out:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
