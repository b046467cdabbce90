"""The prepared GPU check: one call, under 5 minutes on one CUDA GPU, one JSON and one markdown table.

Default and paper-size model (docs/MODEL.md §2 at T = 64, random weights) × torch eager / CUDA graphs /
torch.compile / onnxruntime-gpu with IO binding (with and without its CUDA graphs) / TensorRT where
importable × fp32 / bf16 / fp16 × batch 1 / 64 / 1024: images/s, batch-1 latency, difference from fp32
eager on the same latents; then `fpa-sample --n 50000` of the paper model end to end (a fresh process,
PNG files, start-up included). Targets printed: batch-1 latency ≥ 5× better than fp32 eager; 50,000
paper-size samples to PNG in < 30 s on an H100/H200-class GPU.

Every contender is guarded: a failure or a skip becomes a row with its reason, never an abort. A global
time budget (`--budget`) keeps the whole call under 5 minutes: contenders run in priority order (see
`gpu_contenders.BACKENDS`), each under its own alarm, with time kept back for the end-to-end run; what
does not fit is reported as skipped. `--dry-run`: tiny sizes on the CPU (CUDA-only contenders skipped),
seconds — the test suite runs it so the script cannot rot.

    python tools/gpu_check.py --out gpu-check           # on the GPU machine
    python tools/gpu_check.py --dry-run --out /some/dir  # anywhere, seconds
"""
from __future__ import annotations

from contextlib import contextmanager
import os
from pathlib import Path
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import click
import torch

from fpa_export.common.atomic import atomic_write_bytes, atomic_write_json
from fpa_export.runtime.precision import PrecisionError
import bench_common as common
from gpu_contenders import BACKENDS, Skip, Target, difference, measure

PRECISIONS = ("fp32", "bf16", "fp16")
BATCHES, DRY_BATCHES = (1, 64, 1024), (1, 4, 8)
LATENCY_TARGET, E2E_TARGET_S = 5.0, 30.0
CONTENDER_CAP_S = 90.0       # most seconds one contender may take (build + measure)


class Budget:
    """A deadline for the whole run, with `reserve_s` kept back for the end-to-end run."""

    def __init__(self, seconds: float, reserve_s: float):
        self.deadline, self.reserve_s = time.monotonic() + seconds, reserve_s

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def for_contender(self) -> float:
        return min(CONTENDER_CAP_S, self.left() - self.reserve_s)


@contextmanager
def alarm(seconds: float):
    """Raise TimeoutError in this (main) thread after `seconds`."""
    def expire(signum, frame):
        raise TimeoutError(f"over its {seconds:.0f} s share of the time budget")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_contender(target: Target, backend: str, precision: str, latents, reference, fid_batch: int,
                  budget: Budget, min_seconds: float) -> dict:
    row = {"model": target.label, "backend": backend, "precision": precision, "status": "ok"}
    share = budget.for_contender()
    if share < 1:
        return {**row, "status": "skipped", "note": "time budget"}
    start = time.monotonic()
    try:
        with alarm(share):
            call, row["via"] = BACKENDS[backend](target, precision)
            result = measure(call, latents, min_seconds)
        row.update(images_per_s=result["images_per_s"], latency_ms_b1=result["latency_ms_b1"])
        if backend == "torch eager" and precision == "fp32":
            row["reference_outputs"] = result["outputs"][fid_batch]
        elif reference is not None:
            row.update(difference(result["outputs"][fid_batch], reference))
    except (Skip, PrecisionError) as why:  # PrecisionError: this device cannot run the precision
        row.update(status="skipped", note=str(why))
    except Exception as err:  # noqa: BLE001 — every failure is a row, never an abort
        row.update(status="error", note=f"{type(err).__name__}: {err}"[:300],
                   traceback=traceback.format_exc(limit=4)[-1500:])
    finally:
        if target.on_cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
    row["seconds"] = round(time.monotonic() - start, 2)
    return row


def check_all(targets: list[Target], batches, budget: Budget, min_seconds: float) -> list[dict]:
    """Every contender, backend by backend (so what the budget drops is the last backend, not the
    last model); fp32 torch eager of each model first, as the reference of the differences."""
    fid_batch = batches[len(batches) // 2]
    latents, references = {}, {}
    for target in targets:
        seeds = torch.Generator().manual_seed(0)
        latents[target.label] = {b: torch.randn(b, target.generator.latent_size, generator=seeds)
                                 .to(target.device) for b in batches}
    rows = []
    for backend in BACKENDS:
        for target in targets:
            for precision in PRECISIONS:
                row = run_contender(target, backend, precision, latents[target.label],
                                    references.get(target.label), fid_batch, budget, min_seconds)
                if "reference_outputs" in row:  # the first row of the model: fp32 eager
                    references[target.label] = row.pop("reference_outputs")
                    row.update(difference(references[target.label], references[target.label]))
                rows.append(row)
                print(f"  {row['model']:8s} {backend:28s} {precision}: {row['status']} "
                      f"{row.get('note', '')} ({row['seconds']} s)", file=sys.stderr)
    return rows


def run_e2e(checkpoint: Path, n: int, device: str, batch_size: int, precision: str,
            timeout: float, backend: str = "auto") -> dict:
    """`fpa-sample` as a fresh process writing n PNGs into an empty folder, timed from outside."""
    row = {"n": n, "device": device, "batch_size": batch_size, "precision": precision,
           "backend": backend}
    if timeout < 5:
        return {**row, "status": "skipped", "note": "time budget"}
    command = [str(common.BIN / "fpa-sample"), str(checkpoint), "--n", str(n), "--device", device,
               "--batch-size", str(batch_size), "--backend", backend] + (["--precision", precision] if precision != "fp32" else [])
    with tempfile.TemporaryDirectory(prefix="gpu-check-e2e-") as folder:
        start = time.perf_counter()
        try:
            done = subprocess.run(command + ["--outdir", folder], capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return {**row, "status": "error", "note": f"still running after {timeout:.0f} s (killed)",
                    "wall_s": timeout}
        seconds = time.perf_counter() - start
        files = sum(1 for p in Path(folder).iterdir() if p.suffix == ".png")
    if done.returncode or files != n:
        return {**row, "status": "error", "wall_s": seconds,
                "note": f"exit {done.returncode}, {files}/{n} files: {done.stderr.strip()[-300:]}"}
    return {**row, "status": "ok", "wall_s": seconds, "images_per_s": n / seconds,
            "fpa_sample_said": done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""}


def environment(device: str) -> dict:
    import importlib.metadata as metadata

    found = {"python": platform.python_version(), "torch": torch.__version__,
             "cuda": torch.version.cuda, "device": device, "tf32_matmul":
             torch.backends.cuda.matmul.allow_tf32,  # cuDNN's flag covers nn.LSTM's fp32 kernels
             "tf32_cudnn": torch.backends.cudnn.allow_tf32, "cpu_count": os.cpu_count()}
    if device.startswith("cuda"):
        found["gpu"] = torch.cuda.get_device_name(torch.device(device))
    for package in ("onnxruntime", "onnxruntime-gpu", "tensorrt", "onnx", "triton", "fpa-export"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


# -- the report -------------------------------------------------------------------------------------
def latency_targets(rows: list[dict]) -> list[str]:
    lines = []
    for model in dict.fromkeys(row["model"] for row in rows):
        ok = [r for r in rows if r["model"] == model and r["status"] == "ok" and r.get("latency_ms_b1")]
        eager = next((r for r in ok if r["backend"] == "torch eager" and r["precision"] == "fp32"), None)
        others = [r for r in ok if r["backend"] != "torch eager"]
        if eager is None or not others:
            lines.append(f"- {model}: batch-1 latency ≥ {LATENCY_TARGET:.0f}× fp32 eager — not measured")
            continue
        best = min(others, key=lambda r: r["latency_ms_b1"])
        gain = eager["latency_ms_b1"] / best["latency_ms_b1"]
        lines.append(f"- {model}: batch-1 latency ≥ {LATENCY_TARGET:.0f}× fp32 eager "
                     f"({eager['latency_ms_b1']:.2f} ms) — best {best['backend']} {best['precision']} "
                     f"{best['latency_ms_b1']:.2f} ms = {gain:.1f}× (max level diff "
                     f"{best.get('max_level_diff', '?')}): {'met' if gain >= LATENCY_TARGET else 'NOT met'}")
    return lines


def e2e_targets(e2e: list[dict], env: dict, dry_run: bool) -> list[str]:
    lines = []
    for row in e2e:
        head = (f"- fpa-sample paper model --n {row['n']} {row['precision']} on {env.get('gpu', row['device'])}"
                f" (batch {row['batch_size']}, PNG, fresh process)")
        if row["status"] != "ok":
            lines.append(f"{head}: {row['status']} ({row.get('note', '')})")
            continue
        verdict = "dry run: not a result" if dry_run else (
            "met" if row["wall_s"] < E2E_TARGET_S else "NOT met")
        lines.append(f"{head}: {row['wall_s']:.1f} s, {row['images_per_s']:.0f} img/s — target < "
                     f"{E2E_TARGET_S:.0f} s for 50,000 on an H100/H200-class GPU: {verdict}")
    return lines


def markdown(result: dict) -> str:
    batches = result["batches"]
    lines = [f"# GPU check ({'DRY RUN, CPU, tiny sizes: not a result' if result['dry_run'] else 'GPU'})",
             "", "Environment: " + ", ".join(f"{k} {v}" for k, v in result["environment"].items()),
             "", "| model | backend | precision | via | " + " | ".join(f"batch {b} img/s" for b in batches)
             + " | batch-1 latency (ms) | max abs diff | max level diff | % > 2 levels | status |",
             "|---|---|---|---|" + "---:|" * len(batches) + "---:|---:|---:|---:|---|"]
    for row in result["rows"]:
        rates = row.get("images_per_s", {})
        cells = " | ".join(f"{rates[b]:.0f}" if b in rates else "" for b in batches)
        latency = f"{row['latency_ms_b1']:.2f}" if row.get("latency_ms_b1") else ""
        diff = f"{row['max_abs_diff']:.1e}" if "max_abs_diff" in row else ""
        status = row["status"] + (f": {row['note']}" if row.get("note") else "")
        lines.append(f"| {row['model']} | {row['backend']} | {row['precision']} | {row.get('via', '')} | "
                     f"{cells} | {latency} | {diff} | {row.get('max_level_diff', '')} | "
                     f"{'%.2f' % row['over_2_levels_pct'] if 'over_2_levels_pct' in row else ''} | "
                     f"{status.replace('|', '/')} |")
    lines += ["", "Differences: against fp32 torch eager on the same latents (batch "
              f"{result['fidelity_batch']}), images in [-1, 1]; levels after uint8 conversion.", "",
              "Targets:"] + result["targets"] + ["", f"Total: {result['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for gpu_check.json and gpu_check.md.")
@click.option("--device", default="cuda", show_default=True)
@click.option("--dry-run", is_flag=True, help="Tiny sizes on the CPU, seconds: a check that it runs.")
@click.option("--budget", type=float, default=270.0, show_default=True,
              help="Seconds for the whole call (end-to-end run included).")
@click.option("--n-e2e", type=click.IntRange(1), default=50000, show_default=True)
@click.option("--models", default="paper,default", show_default=True)
def main(out, device, dry_run, budget, n_e2e, models):
    """Every GPU contender × precision × batch size, and fpa-sample end to end: one JSON, one table.

    \b
    Examples:
      python tools/gpu_check.py --out gpu-check
      python tools/gpu_check.py --dry-run --out /path/to/folder
    """
    started = time.monotonic()
    if dry_run:
        device, batches, n_e2e, min_seconds, e2e_batch = "cpu", DRY_BATCHES, min(n_e2e, 16), 0.0, 8
    else:
        if not torch.cuda.is_available():
            raise click.UsageError("no CUDA GPU visible to torch: run with --dry-run on a CPU")
        batches, min_seconds, e2e_batch = BATCHES, 0.2, 1024
    env = environment(device)
    plan = Budget(budget, reserve_s=min(90.0, budget / 3))
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        work = Path(folder)
        os.environ["FPA_EXPORT_CACHE"] = str(work / "cache")
        targets = make_targets(models.split(","), device, work, dry_run, max(batches))
        rows = check_all(targets, batches, plan, min_seconds)
        paper = next((t.checkpoint for t in targets if t.label == "paper"), None)
        backend = "torch" if dry_run else "auto"  # dry run: no ONNX export on the CPU, seconds
        e2e = []
        if paper is not None:
            e2e.append(run_e2e(paper, n_e2e, device, e2e_batch, "fp32", min(120.0, plan.left() - 5),
                               backend))
            if common.cli_has_precision() and (device != "cpu" or common.cpu_has_bf16()):
                e2e.append(run_e2e(paper, n_e2e, device, e2e_batch, "bf16", plan.left() - 5, backend))
    result = {"dry_run": dry_run, "environment": env, "batches": list(batches),
              "fidelity_batch": batches[len(batches) // 2], "rows": rows, "e2e": e2e,
              "seconds": time.monotonic() - started}
    result["targets"] = latency_targets(rows) + e2e_targets(e2e, env, dry_run)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "gpu_check.json", result, sort_keys=False)
    atomic_write_bytes(out / "gpu_check.md", markdown(result).encode("utf-8"))
    click.echo("\n".join(result["targets"]))
    click.echo(f"Wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {result['seconds']:.0f} s")


def make_targets(labels: list[str], device: str, work: Path, tiny: bool, max_batch: int) -> list[Target]:
    from fpa_export import load_generator
    from fpa_export.models import default_checkpoint_path

    targets = []
    for label in labels:
        if label not in ("paper", "default"):
            raise click.BadParameter(f"unknown model {label!r}: paper or default", param_hint="--models")
        if label == "paper":
            checkpoint = common.save_paper_checkpoint(work / "paper.pt", tiny)
        elif tiny:  # a greyscale toy in place of the embedded model: seconds on a CPU
            checkpoint = common.save_paper_checkpoint(work / "default.pt", tiny, channels=1)
        else:
            checkpoint = Path(default_checkpoint_path())
        targets.append(Target(label, checkpoint, load_generator(checkpoint), device, work, max_batch))
    return targets


if __name__ == "__main__":
    main()
