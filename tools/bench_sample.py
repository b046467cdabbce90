"""Benchmark `fpa-sample` end to end against the loops it replaces, as a user runs them, in one run.

Every contender is a fresh process writing N PNG files into a new, empty folder, timed from outside
(Python start-up, imports and model loading included); all contenders of both models alternate for
`--repeats` rounds; medians (and bests) of that one run. Contenders:

- default model (the embedded one), `--n-default` images:
  the *plain loop* — `load_generator()`, eager batches, each image saved with Pillow — at PyTorch's
  default thread count and at `OMP_NUM_THREADS=1` (the better one is the baseline); `fpa-sample` fp32;
  `fpa-sample --precision bf16`.
- paper-size model (T = 64, LSTM 1024, 64×64 RGB, random weights saved as a checkpoint of ours),
  `--n-paper` images: the official loop's shape (`nn.LSTM`, a Python loop over the T steps keeping W
  explicit, torchvision-style `save_image` per image; `tools/official_loop.py`) at both thread
  settings; `fpa-sample` fp32 and `--precision bf16`.

The bf16 contenders run only where `fpa-sample --help` lists `--precision` and the CPU has bf16
instructions; otherwise a note says why they were skipped. The export cache ($FPA_EXPORT_CACHE) is a
fresh temporary folder: the first `fpa-sample` run of each model exports into it and is reported
separately as the cold-cache (first use) cost; then every contender is warmed with one untimed batch
before the timed rounds. The fidelity of bf16 is measured from the two output folders (the same
indices). The load average is recorded at start and end; above 0.5 at start the run says it is not a
result.

    python tools/bench_sample.py --json-out bench-sample.json        # ~5 min on a quiet 2-core CPU
    python tools/bench_sample.py --tiny --repeats 1 --no-warmup      # seconds: a check that it runs
"""
from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

import click

from fpa_export.common.atomic import atomic_write_json
import bench_common as common

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TARGETS = {"default": ("fpa-sample fp32", 2.0), "paper": ("fpa-sample bf16", 2.5)}
BASELINE_TEXT = {
    "plain": "plain loop (load_generator(), eager batches of {b}, each image saved with Pillow)",
    "official": "official loop shape (nn.LSTM + Python loop over T keeping W explicit, "
                "save_image per image, batch {b})"}


@dataclass
class Contender:
    name: str
    model: str                       # "default" | "paper"
    command: list[str]               # without --outdir
    env: dict = field(default_factory=dict)
    baseline: bool = False
    times: list[float] = field(default_factory=list)
    error: Optional[str] = None      # set when a run of it failed: it is dropped from the table

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def threads_text(env: dict) -> str:
    return "OMP_NUM_THREADS=1" if env.get("OMP_NUM_THREADS") == "1" else "default threads"


def baseline_command(kind: str, checkpoint: Optional[Path], n: int, batch_size: int) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--baseline", kind, "--n-default", str(n),
               "--batch-size", str(batch_size)]
    return command + (["--model", str(checkpoint)] if checkpoint else [])


def sample_command(checkpoint: Optional[Path], n: int, batch_size: int, precision: Optional[str]):
    command = [str(common.BIN / "fpa-sample"), *([str(checkpoint)] if checkpoint else []),
               "--n", str(n), "--batch-size", str(batch_size)]
    return command + (["--precision", precision] if precision else [])


def contenders(models: dict, batch_size: int, bf16: bool) -> list[Contender]:
    """models: label → (checkpoint or None, n). Baselines first, then fpa-sample fp32 and bf16."""
    found = []
    for label, (checkpoint, n) in models.items():
        kind = "plain" if label == "default" else "official"
        for env in ({}, ONE_THREAD):
            found.append(Contender(f"{kind} loop, {threads_text(env)}", label,
                                   baseline_command(kind, checkpoint, n, batch_size), env, True))
        found.append(Contender("fpa-sample fp32", label, sample_command(checkpoint, n, batch_size, None)))
        if bf16:
            found.append(Contender("fpa-sample bf16", label,
                                   sample_command(checkpoint, n, batch_size, "bf16")))
    return found


def timed(command: list[str], env: dict, outdir: Path, n: int) -> float:
    """Wall time of one fresh process writing n PNGs into `outdir`, a folder that must not exist yet.
    Nothing is deleted until the end: on file systems mounted with `discard`, creating files right
    after deleting thousands of others is slower, which would tax whichever contender runs next."""
    start = time.perf_counter()
    done = subprocess.run(command + ["--outdir", str(outdir)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-2000:]}")
    files = sum(1 for p in outdir.iterdir() if p.suffix == ".png")
    if files != n:
        raise RuntimeError(f"{command[0]} wrote {files} images, expected {n}")
    return seconds


def with_n(command: list[str], n: int) -> list[str]:
    """The same command for n images (for the one-batch warm-up)."""
    command = list(command)
    flag = "--n-default" if "--n-default" in command else "--n"
    command[command.index(flag) + 1] = str(n)
    return command


def guarded(call: Contender, command: list[str], outdir: Path, n: int) -> Optional[float]:
    """timed(), but a failure marks the contender failed (reported, dropped) instead of aborting."""
    if call.error:
        return None
    try:
        return timed(command, call.env, outdir, n)
    except RuntimeError as err:
        call.error = str(err).splitlines()[-1][:300]
        click.echo(f"{call.model} / {call.name} failed, dropped: {call.error}", err=True)
        return None


def run_rounds(calls: list[Contender], models: dict, batch_size: int, repeats: int, warmup: bool,
               workdir: Path) -> dict:
    """Cold-cache runs, warm-ups and the interleaved timed rounds; fills each contender's times."""
    cold = {}
    for call in calls:  # the first fpa-sample fp32 of each model: exports into the empty cache
        if call.name == "fpa-sample fp32":
            seconds = guarded(call, call.command, workdir / f"cold-{call.model}", models[call.model][1])
            if seconds is not None:
                cold[call.model] = seconds
    if warmup:
        for k, call in enumerate(calls):
            n = min(batch_size, models[call.model][1])
            guarded(call, with_n(call.command, n), workdir / f"warm-{k}", n)
    for round_ in range(repeats):
        for k, call in enumerate(calls):
            seconds = guarded(call, call.command, workdir / f"run-{round_}-{k}", models[call.model][1])
            if seconds is not None:
                call.times.append(seconds)
    return cold


def model_result(label: str, calls: list[Contender], n: int, batch_size: int, workdir: Path,
                 repeats: int) -> dict:
    mine = [c for c in calls if c.model == label and not c.error]
    baselines = [c for c in mine if c.baseline]
    if not baselines:
        raise RuntimeError(f"{label}: every baseline run failed: " + "; ".join(
            c.error for c in calls if c.model == label and c.baseline))
    base = min(baselines, key=lambda c: c.median)
    kind = "plain" if label == "default" else "official"
    conditions = (f"{BASELINE_TEXT[kind].format(b=batch_size)} at {threads_text(base.env)} (its better "
                  f"thread setting), median of {repeats} fresh processes, {base.median:.2f} s for "
                  f"N = {n}")
    rows = {c.name: {"seconds": c.times, "median_s": c.median, "best_s": min(c.times),
                     "images_per_s": n / c.median, "speedup": base.median / c.median} for c in mine}
    result = {"n": n, "baseline": base.name, "baseline_conditions": conditions, "rows": rows}
    indices = {c.name: k for k, c in enumerate(calls) if c.model == label and not c.error}
    if "fpa-sample bf16" in indices and "fpa-sample fp32" in indices and repeats:
        last = repeats - 1
        result["bf16_fidelity"] = common.folder_fidelity(
            workdir / f"run-{last}-{indices['fpa-sample fp32']}",
            workdir / f"run-{last}-{indices['fpa-sample bf16']}")
    return result


def target_line(label: str, result: dict) -> str:
    name, goal = TARGETS[label]
    row = result["rows"].get(name)
    if row is None:
        return f"- target {label}: {name} ≥ {goal}× — not measured ({name} skipped, see notes)"
    met = row["speedup"] >= goal
    fidelity = result.get("bf16_fidelity")
    if name.endswith("bf16") and fidelity is not None:
        met = met and fidelity["passes"]
    return (f"- target {label}: {name} ≥ {goal}× the baseline — {row['speedup']:.2f}× "
            f"({'met' if met else 'NOT met'}); baseline: {result['baseline_conditions']}")


def report(result: dict) -> str:
    lines = []
    if result["warning"]:
        lines.append(result["warning"])
    start, end = result["machine_start"], result["machine_end"]
    lines.append(f"load average at start {start['loadavg'][0]:.2f} / end {end['loadavg'][0]:.2f} "
                 f"(uptime at start: {start['uptime']}); {start['cpu_count']} CPU cores")
    lines.append("versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()))
    for label, model in result["models"].items():
        lines += ["", f"{label} model, N = {model['n']}, batch {result['batch_size']}:", "",
                  "| contender | median (s) | best (s) | images/s | speed-up |", "|---|---:|---:|---:|---:|"]
        for name, row in model["rows"].items():
            lines.append(f"| {name} | {row['median_s']:.2f} | {row['best_s']:.2f} | "
                         f"{row['images_per_s']:.0f} | {row['speedup']:.2f}× |")
        lines.append(f"\nspeed-up = baseline median / contender median; baseline: "
                     f"{model['baseline_conditions']}.")
        if label in result["cold_s"]:
            lines.append(f"first use (cold export cache, fpa-sample fp32, not in the table): "
                         f"{result['cold_s'][label]:.2f} s")
        if "bf16_fidelity" in model:
            lines.append("bf16 vs fp32 files of the same indices: "
                         + common.fidelity_text(model["bf16_fidelity"]))
        lines.append(target_line(label, model))
    lines += [""] + [f"note: {note}" for note in result["notes"]]
    return "\n".join(lines)


def bf16_notes() -> tuple[bool, list[str]]:
    notes = []
    if not common.cli_has_precision():
        notes.append("fpa-sample has no --precision option in this checkout: bf16 contenders skipped")
    elif not common.cpu_has_bf16():
        notes.append("this CPU has no avx512_bf16/amx_bf16: bf16 contenders skipped")
    return not notes, notes


def run_benchmark(models: list[str], n_default: int, n_paper: int, batch_size: int, repeats: int,
                  warmup: bool, tiny: bool, workdir: Path) -> dict:
    start = common.machine_state()
    warning = common.load_warning(start)
    if warning:
        click.echo(warning, err=True)
    bf16, notes = bf16_notes()
    table = {}
    if "default" in models:
        table["default"] = (None, n_default)
    if "paper" in models:
        table["paper"] = (common.save_paper_checkpoint(workdir / "paper.pt", tiny), n_paper)
    calls = contenders(table, batch_size, bf16)
    cold = run_rounds(calls, table, batch_size, repeats, warmup, workdir)
    notes += [f"{c.model} / {c.name} failed and was dropped: {c.error}" for c in calls if c.error]
    notes.append(f"export cache: a fresh empty folder ($FPA_EXPORT_CACHE) for this run; the cold run "
                 f"filled it{'; every contender was warmed with one untimed batch' if warmup else ''}"
                 f" before {repeats} interleaved timed round(s)")
    if tiny:
        notes.append("--tiny: a toy stand-in for the paper model — a check that the script runs, "
                     "not a result")
    return {"batch_size": batch_size, "repeats": repeats, "warmup": warmup, "tiny": tiny,
            "machine_start": start, "machine_end": common.machine_state(), "warning": warning,
            "cold_s": cold, "notes": notes, "versions": common.versions(),
            "models": {label: model_result(label, calls, n, batch_size, workdir, repeats)
                       for label, (_, n) in table.items()}}


@click.command()
@click.option("--models", default="default,paper", show_default=True)
@click.option("--n-default", type=click.IntRange(1), default=10000, show_default=True)
@click.option("--n-paper", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--batch-size", type=click.IntRange(1), default=64, show_default=True)
@click.option("--repeats", type=click.IntRange(1), default=3, show_default=True)
@click.option("--warmup/--no-warmup", default=True, show_default=True,
              help="One untimed batch of every contender before the timed rounds.")
@click.option("--tiny", is_flag=True, help="A toy stand-in for the paper model: a check that the script runs, for tests.")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--baseline", type=click.Choice(["plain", "official"]), hidden=True)
@click.option("--model", default=None, hidden=True)
@click.option("--outdir", type=click.Path(path_type=Path), hidden=True)
def main(models, n_default, n_paper, batch_size, repeats, warmup, tiny, json_out, baseline, model,
         outdir):
    """Time fpa-sample (fp32, bf16) against the plain loop and the official loop: one run, one table.

    \b
    Examples:
      python tools/bench_sample.py --json-out bench-sample.json
      python tools/bench_sample.py --models paper --n-paper 500 --repeats 2
    """
    if baseline:  # a child process: one baseline run (--n-default carries its N)
        from official_loop import BASELINES

        BASELINES[baseline](model, n_default, batch_size, outdir)
        return
    unknown = set(models.split(",")) - set(TARGETS)
    if unknown:
        raise click.BadParameter(f"unknown model(s) {sorted(unknown)}; choose from {sorted(TARGETS)}",
                                 param_hint="--models")
    with tempfile.TemporaryDirectory(prefix="bench-sample-") as tmp:
        os.environ["FPA_EXPORT_CACHE"] = str(Path(tmp) / "cache")
        result = run_benchmark(models.split(","), n_default, n_paper, batch_size, repeats, warmup,
                               tiny, Path(tmp))
    click.echo(report(result))
    if json_out:
        atomic_write_json(json_out, result, sort_keys=False)
        click.echo(f"JSON: {json_out}")


if __name__ == "__main__":
    main()
