"""Benchmark the sampling backends: images/s per backend × batch size, all in one process.

For each model (the paper configuration of docs/MODEL.md §2 at T = 64 with random weights, and the embedded
default model) it times every available backend of `fpa_export.runtime` and an "official-style"
baseline, reports the FLOPs per image and, in the same run, the fastest matmul this machine does, so
every ratio in the output comes from one run. On a multi-core CPU two rows run as `fpa-sample` paints:
"a batch per core at once" (one onnxruntime thread each; img/s counts every batch), beside the same
matmul one per core at once, so the peak includes that arrangement too.

The baseline (`tools/official_loop.py`) is the shape of the official IDSIA/fpainter sampling loop —
`nn.LSTM`, then a Python loop over the T steps that keeps each S×S canvas explicit and does two batched
matmuls per step (retrieve W k_t, add u_t k_tᵀ).

bf16 rows (where the CPU has avx512_bf16/amx_bf16, or on a CUDA GPU with bf16; `--bf16 on` forces
them, e.g. to check the script on a CPU that only emulates bf16): torch eager under bf16 autocast,
torch eager with bf16 weights, and `make_sampler(..., precision="bf16")` where the package has that
argument; each with its uint8 fidelity against fp32 eager. The target line checks the fp32 exported
graph at batch 64 against the official loop and against the fp32 matmul peak of the same run.

    python tools/bench_sampler.py                      # CPU: batches 1, 16, 64, 256
    python tools/bench_sampler.py --device cuda        # GPU: batches up to 4096
    python tools/bench_sampler.py --tiny               # seconds: a check that it runs
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import copy
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from fpa_export.models import FPAConfig, FPAGenerator, default_checkpoint_path, load_checkpoint
from fpa_export.runtime import available_backends, make_sampler

from fpa_export.common.atomic import atomic_write_json
import bench_common as common
from official_loop import OfficialStyleSampler

CPU_BATCHES = (1, 16, 64, 256)
GPU_BATCHES = (1, 16, 64, 256, 1024, 4096)


NOTES: list[str] = []  # printed under the tables: rows that could not be made, and why
TARGET_BATCH = 64
TARGET_PEAK = 0.80  # fp32 exported graph, paper model, batch 64: at least this share of the matmul peak
OFFICIAL = OfficialStyleSampler.name


# -- low-precision contenders -----------------------------------------------------------------------
class AutocastSampler:
    """torch eager under autocast (matmuls and the LSTM in `dtype`, the rest as autocast decides)."""

    def __init__(self, generator: FPAGenerator, device: str, dtype: torch.dtype = torch.bfloat16):
        self.generator, self.device, self.dtype = generator.to(device).eval(), device, dtype

    @torch.inference_mode()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        with torch.autocast(torch.device(self.device).type, dtype=self.dtype):
            return self.generator(z.to(self.device)).float().cpu()


class CastSampler:
    """torch eager with every weight (and so every op, the painting included) in `dtype`."""

    def __init__(self, generator: FPAGenerator, device: str, dtype: torch.dtype = torch.bfloat16):
        self.generator = copy.deepcopy(generator).to(device=device, dtype=dtype).eval()
        self.device, self.dtype = device, dtype

    @torch.inference_mode()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z.to(self.device, self.dtype)).float().cpu()


class ConcurrentBatches:
    """`copies` calls of `run` at once, one per thread: how `fpa-sample` paints on a CPU (one batch per
    core, one runtime thread each). Returns the first call's result; a call paints `copies` batches."""

    def __init__(self, run, copies: int):
        self.run, self.copies = run, copies
        self.pool = ThreadPoolExecutor(copies)

    def __call__(self, *args):
        return list(self.pool.map(lambda _: self.run(*args), range(self.copies)))[0]


def bf16_choice(mode: str, device: str) -> tuple[bool, str]:
    """(run the bf16 rows?, a note saying why or why not)."""
    if mode == "off":
        return False, "bf16 rows off (--bf16 off)"
    if device.startswith("cuda"):
        ok = torch.cuda.is_bf16_supported()
        return ok or mode == "on", "CUDA bf16" if ok else "this GPU has no bf16"
    if common.cpu_has_bf16():
        return True, "CPU bf16 instructions found (avx512_bf16/amx_bf16)"
    if mode == "on":
        return True, "bf16 forced (--bf16 on) on a CPU without bf16 instructions: emulated, slow"
    return False, "this CPU has no avx512_bf16/amx_bf16: bf16 rows skipped"


# -- measurements ---------------------------------------------------------------------------------
def interleaved_medians(calls: dict, repeats: int, budget_s: float) -> dict[str, float]:
    """Median seconds per call of each entry, timed in rounds (one call of each entry per round), so
    a change in machine load hits every entry alike. Two warm-up calls each; 3 ≤ rounds ≤ repeats."""
    first = {}
    for name, call in calls.items():
        call()
        start = time.perf_counter()
        call()
        first[name] = time.perf_counter() - start
    rounds = max(3, min(repeats, int(budget_s / max(sum(first.values()), 1e-6))))
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def flops_per_image(generator: FPAGenerator) -> float:
    """Matmul FLOPs of one image (unrolled LSTM, so the recurrence is counted; 2 per multiply-add)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        generator(torch.zeros(1, generator.latent_size), unrolled=True)
    return float(counter.get_total_flops())


def matmul_calls(config: FPAConfig, batch: int, device: str, square: int = 2048,
                 bf16: bool = False) -> dict[str, tuple]:
    """{label: (call, flops)}: matmuls timed beside the models, for the matmul peak — the model's
    dominant product (the LSTM recurrence at `batch`: (B × H) @ (H × 4H)) and a large square one, in
    torch and (on the CPU) in onnxruntime, float32; with `bf16` also torch bf16 ("bf16 …" labels)."""
    shapes = {"lstm-shaped": (batch, config.hidden_size, 4 * config.hidden_size),
              f"square-{square}": (square, square, square)}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    calls = {}
    for label, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        calls[f"torch {label}"] = (lambda a=a, b=b: (torch.matmul(a, b), sync()), 2 * m * k * n)
        if bf16:
            a16, b16 = a.bfloat16(), b.bfloat16()
            calls[f"bf16 torch {label}"] = (lambda a=a16, b=b16: (torch.matmul(a, b), sync()),
                                            2 * m * k * n)
        if device == "cpu" and "onnx" in available_backends("cpu"):
            session, feed = _ort_matmul(b.numpy()), {"a": a.numpy()}
            calls[f"onnxruntime {label}"] = (lambda s=session, f=feed: s.run(None, f), 2 * m * k * n)
            cores = torch.get_num_threads()
            if cores > 1:  # the same product, one per core at once on one thread each
                single = _ort_matmul(b.numpy(), threads=1)
                calls[f"onnxruntime {label}, one per core at once"] = (
                    ConcurrentBatches(lambda s=single, f=feed: s.run(None, f), cores), cores * 2 * m * k * n)
    return calls


def _ort_matmul(weight: np.ndarray, threads: int = 0):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["m", weight.shape[0]])],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    return ort.InferenceSession(onnx.ModelProto.SerializeToString(model), options,
                                providers=["CPUExecutionProvider"])


# -- the runs -------------------------------------------------------------------------------------
def samplers(checkpoint: Path, generator: FPAGenerator, device: str, bf16: bool) -> dict[str, object]:
    """Every backend runnable here, plus the baseline. onnx: both LSTM forms, to compare them."""
    found = {OFFICIAL: OfficialStyleSampler(load_checkpoint(checkpoint)[0], device)}
    found["torch eager, nn.LSTM"] = make_sampler(generator, backend="torch", device=device,
                                                  cuda_graphs=False)
    unrolled = make_sampler(generator, backend="torch", device=device, cuda_graphs=False)
    unrolled._forward = functools.partial(unrolled.generator, unrolled=True)
    found["torch eager, unrolled LSTM"] = unrolled
    if device.startswith("cuda"):
        found["torch CUDA graphs"] = make_sampler(generator, backend="torch", device=device)
    if "onnx" in available_backends(device):
        for lstm in ("op", "unrolled"):
            found[f"onnxruntime, LSTM {lstm}"] = make_sampler(
                checkpoint, backend="onnx", device=device, lstm=lstm,
                threads=torch.get_num_threads())
        if device == "cpu" and torch.get_num_threads() > 1:  # as fpa-sample paints on a CPU
            single = make_sampler(checkpoint, backend="onnx", device=device, lstm="op", threads=1)
            found["onnxruntime, LSTM op, a batch per core at once"] = ConcurrentBatches(
                single, torch.get_num_threads())
    if "trt" in available_backends(device):
        from fpa_export.export import build_engine

        for fp16 in (False, True):
            plan = Path(os.environ["FPA_EXPORT_CACHE"]) / f"{checkpoint.stem}-{fp16}.plan"
            engine = build_engine(checkpoint, plan, fp16=fp16, max_batch=4096, exporter="torchscript")
            found[f"TensorRT {'fp16' if fp16 else 'fp32'}"] = make_sampler(engine.path, backend="trt",
                                                                          device=device)
    if bf16:
        found["bf16: torch eager, autocast"] = AutocastSampler(load_checkpoint(checkpoint)[0], device)
        found["bf16: torch eager, bf16 weights"] = CastSampler(generator, device)
        if common.api_has_precision(make_sampler):
            try:  # the package may refuse (no bf16 here, fidelity probe failed): a note, not an abort
                found["bf16: make_sampler(precision='bf16')"] = make_sampler(
                    checkpoint, backend="auto", device=device, precision="bf16")
            except Exception as err:  # noqa: BLE001
                print(f"note: make_sampler(precision='bf16') refused: {err}", file=sys.stderr)
                NOTES.append(f"make_sampler(precision='bf16') refused: {err}")
        else:
            NOTES.append("make_sampler has no precision= argument here: its bf16 row skipped")
    return found


def fidelity_rows(runs: dict, z: torch.Tensor) -> dict[str, dict]:
    """Per run: max abs difference and uint8 level figures against fp32 torch eager, same latents."""
    reference = runs["torch eager, nn.LSTM"](z)
    rows = {}
    for name, run in runs.items():
        images = run(z)
        levels = common.level_stats(common.to_levels(reference), common.to_levels(images))
        rows[name] = {"max_abs_diff": float((images - reference).abs().max()),
                      "max_level": levels["max_level"],
                      "over_2_levels_pct": 100 * (1 - levels["within_2_fraction"])}
    return rows


def bench_model(label: str, checkpoint: Path, batches, device: str, repeats: int, budget_s: float,
                bf16: bool, tiny: bool):
    generator = load_checkpoint(checkpoint)[0]
    config = generator.config
    flops = flops_per_image(generator)
    runs = samplers(checkpoint, generator, device, bf16)
    matmuls = matmul_calls(config if tiny else FPAConfig(), TARGET_BATCH, device,
                           square=64 if tiny else 2048, bf16=bf16)
    z_all = torch.randn(max(batches), config.latent_size, generator=torch.Generator().manual_seed(0))
    rows = fidelity_rows(runs, z_all[:4])
    peaks: dict[str, float] = {}
    for batch in batches:
        calls = {name: (lambda run=run, z=z_all[:batch]: run(z)) for name, run in runs.items()}
        calls.update({name: call for name, (call, _) in matmuls.items()})
        seconds = interleaved_medians(calls, repeats, budget_s)
        for name, run in runs.items():
            rows[name][batch] = batch * getattr(run, "copies", 1) / seconds[name]
            print(f"  {label:8s} {name:36s} batch {batch:5d}: {rows[name][batch]:9.1f} img/s",
                  file=sys.stderr)
        for name, (_, mm_flops) in matmuls.items():
            peaks[name] = max(peaks.get(name, 0.0), mm_flops / seconds[name] / 1e9)
    return {"label": label, "config": config.to_dict(), "flops_per_image": flops, "rows": rows,
            "peaks": peaks}


def fp32_peak(peaks: dict) -> float:
    return max(v for k, v in peaks.items() if not k.startswith("bf16"))


def target_line(result: dict, batches) -> str:
    """The issue's target for the fp32 exported graph (paper model, batch 64)."""
    rows, peak = result["rows"], fp32_peak(result["peaks"])
    graphs = [name for name in rows if name.startswith("onnxruntime")]
    head = (f"target: fp32 exported graph, {result['label']} model, batch {TARGET_BATCH}: not slower "
            f"than official eager, ≥ {100 * TARGET_PEAK:.0f} % of the matmul peak measured in the same run")
    if TARGET_BATCH not in batches or not graphs:
        return f"{head} — not measured (needs batch {TARGET_BATCH} and onnxruntime)"
    best = max(graphs, key=lambda name: rows[name][TARGET_BATCH])
    speed, official = rows[best][TARGET_BATCH], rows[OFFICIAL][TARGET_BATCH]
    share = speed * result["flops_per_image"] / 1e9 / peak
    met = speed >= official and share >= TARGET_PEAK
    return (f"{head} — {best}: {speed:.0f} img/s = {speed / official:.2f}× official eager "
            f"({official:.0f} img/s), {100 * share:.0f} % of {peak:.0f} GFLOP/s: "
            f"{'met' if met else 'NOT met'}")


def summarise(result: dict, batches) -> list[str]:
    """A markdown table and the target ratios for one model."""
    rows, flops, peaks = result["rows"], result["flops_per_image"], result["peaks"]
    baseline, peak = rows[OFFICIAL], fp32_peak(peaks)
    lines = ["| backend | max abs diff | max level diff | % > 2 levels | "
             + " | ".join(f"batch {b}" for b in batches) + " |",
             "|---|---|---|---|" + "---|" * len(batches)]
    for name, row in rows.items():
        cells = " | ".join(f"{row[b]:.0f}" for b in batches)
        lines.append(f"| {name} | {row['max_abs_diff']:.1e} | {row['max_level']} | "
                     f"{row['over_2_levels_pct']:.2f} | {cells} |")
    lines.append("")
    lines.append("matmul GFLOP/s (best median over the batch rounds): "
                 + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    for batch in batches:
        fp32 = [n for n in rows if n != OFFICIAL and not n.startswith("bf16")]
        best_name = max(fp32, key=lambda n: rows[n][batch])
        speed = rows[best_name][batch]
        lines.append(f"- batch {batch}: best fp32 = {best_name}, {speed / baseline[batch]:.2f}× the "
                     f"official-style baseline, {speed * flops / 1e9:.0f} GFLOP/s = "
                     f"{100 * speed * flops / 1e9 / peak:.0f} % of the fp32 matmul peak ({peak:.0f} GFLOP/s)")
        for name in (n for n in rows if n.startswith("bf16")):
            lines.append(f"  - {name}: {rows[name][batch] / baseline[batch]:.2f}× the baseline, "
                         f"{rows[name][batch] / rows['torch eager, nn.LSTM'][batch]:.2f}× fp32 torch eager")
    if result["label"] == "paper":
        lines.append(target_line(result, batches))
    return lines


@click.command()
@click.option("--device", default="cpu", show_default=True)
@click.option("--batches", default=None, help="Comma-separated batch sizes  [default: by device]")
@click.option("--models", default="paper,default", show_default=True,
              help="paper: docs/MODEL.md §2 at T=64, random weights; default: the embedded model.")
@click.option("--threads", type=int, default=None, help="CPU threads  [default: all cores]")
@click.option("--repeats", type=int, default=15, show_default=True, help="Most timed rounds.")
@click.option("--budget", type=float, default=20.0, show_default=True,
              help="Seconds of timed rounds per batch size (fewer rounds for slow calls, never < 3).")
@click.option("--bf16", "bf16_mode", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True, help="bf16 rows: auto = where the CPU/GPU has bf16.")
@click.option("--tiny", is_flag=True, help="A toy paper model, small matmuls: a check that it runs.")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
def main(device, batches, models, threads, repeats, budget, bf16_mode, tiny, json_out):
    """Images/s per backend and batch size, FLOPs per image and the matmul peak, in one run.

    \b
    Examples:
      python tools/bench_sampler.py
      python tools/bench_sampler.py --models paper --batches 1,64 --json-out bench.json
    """
    torch.manual_seed(0)
    torch.set_num_threads(threads or os.cpu_count())
    on_gpu = device.startswith("cuda")
    batches = tuple(int(b) for b in batches.split(",")) if batches else (
        GPU_BATCHES if on_gpu else CPU_BATCHES)
    bf16, bf16_note = bf16_choice(bf16_mode, device)
    start = common.machine_state()
    warning = common.load_warning(start)
    if warning:
        print(warning, file=sys.stderr)
    os.environ.setdefault("FPA_EXPORT_CACHE", tempfile.mkdtemp(prefix="fpa-bench-"))
    with tempfile.TemporaryDirectory() as folder:
        checkpoints = {"paper": common.save_paper_checkpoint(Path(folder) / "paper.pt", tiny),
                       "default": default_checkpoint_path()}
        results = [bench_model(name, checkpoints[name], batches, device, repeats, budget, bf16, tiny)
                   for name in models.split(",")]
    end = common.machine_state()
    if warning:
        print(warning)
    print(f"threads: {torch.get_num_threads()}, device: {device}, torch {torch.__version__}; "
          f"load average at start {start['loadavg'][0]:.2f}, at end {end['loadavg'][0]:.2f}; {bf16_note}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in common.versions().items()))
    for result in results:
        c = result["config"]
        print(f"\n{result['label']}: {c['channels']}×{c['image_size']}², T={c['num_steps']}, "
              f"H={c['hidden_size']}, {result['flops_per_image'] / 1e6:.0f} MFLOP/image; images/s:\n")
        print("\n".join(summarise(result, batches)))
    for note in dict.fromkeys(NOTES):
        print(f"note: {note}")
    if json_out:
        atomic_write_json(json_out, {"machine_start": start, "machine_end": end,
                                     "versions": common.versions(), "warning": warning, "bf16": bf16_note,
                                     "notes": list(dict.fromkeys(NOTES)), "results": results},
                          sort_keys=False)


if __name__ == "__main__":
    main()
