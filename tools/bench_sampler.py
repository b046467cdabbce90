"""Benchmark the sampling backends: images/s per backend × batch size, all in one process.

For each model (the paper configuration of FPA_SPEC §2 at T = 64 with random weights, and the embedded
default model) it times every available backend of `fpa_export.runtime` and an "official-style"
baseline, reports the FLOPs per image and, in the same run, the fastest matmul this machine does, so
every ratio in the output comes from one run.

The baseline is written here on purpose and only here: it is what we compare against, the shape of
the official IDSIA/fpainter sampling loop — `nn.LSTM`, then a Python loop over the T steps that keeps
each S×S canvas explicit and does two batched matmuls per step (retrieve W k_t, add u_t k_tᵀ).

    python tools/bench_sampler.py                      # CPU: batches 1, 16, 64, 256
    python tools/bench_sampler.py --device cuda        # GPU: batches up to 4096
"""
from __future__ import annotations

import functools
import json
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

from fpa_export.models import FPAConfig, FPAGenerator, default_checkpoint_path, load_checkpoint, save_checkpoint
from fpa_export.runtime import available_backends, make_sampler

CPU_BATCHES = (1, 16, 64, 256)
GPU_BATCHES = (1, 16, 64, 256, 1024, 4096)


# -- the baseline we compare against ----------------------------------------------------------------
class OfficialStyleSampler:
    """nn.LSTM + a Python loop of S×S canvas updates by bmm, in eager PyTorch (the official loop)."""

    name = "official-style (eager)"

    def __init__(self, generator: FPAGenerator, device: str):
        self.generator = generator.to(device).eval()
        self.device = device

    @torch.inference_mode()
    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        g, c = self.generator, self.generator.config
        z = z.to(self.device)
        batch, size, width = z.shape[0], c.image_size, c.channels * c.image_size
        hidden = g.lstm(g._lstm_inputs(z), g._initial_state(z))[0]  # (B, T, H)
        raw = g.kvb(g.wide(hidden) if c.wide_out_dim else hidden)  # (B, T, C·(2S + r))
        canvas = z.new_zeros(batch * c.channels, size, size)
        for t in range(c.num_steps):
            key, value, lr = raw[:, t].split([width, width, c.channels * c.lr_size], dim=1)
            key = key.reshape(-1, size)
            key = torch.softmax(key, dim=1) if c.key_softmax else key
            value = value.reshape(-1, size)
            value = torch.tanh(value) if c.value_tanh else value
            lr = lr.reshape(-1, c.lr_size)
            lr = torch.sigmoid(lr) if c.lr_sigmoid else lr
            if t > 0:  # delta rule on the explicit canvas: retrieve W k, write β(v − W k)
                value = lr * (value - torch.bmm(canvas, key.unsqueeze(2)).squeeze(2))
            canvas = canvas + torch.bmm(value.unsqueeze(2), key.unsqueeze(1))
        return g.finish(canvas.reshape(batch, c.channels, size, size)).float().cpu()


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


def matmul_calls(config: FPAConfig, batch: int, device: str) -> dict[str, tuple]:
    """{label: (call, flops)}: float32 matmuls timed beside the models, for the matmul peak — the
    model's dominant product (the LSTM recurrence at `batch`: (B × H) @ (H × 4H)) and a large square
    one, in torch and (on the CPU) in onnxruntime."""
    shapes = {"lstm-shaped": (batch, config.hidden_size, 4 * config.hidden_size),
              "square-2048": (2048, 2048, 2048)}
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    calls = {}
    for label, (m, k, n) in shapes.items():
        a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
        calls[f"torch {label}"] = (lambda a=a, b=b: (torch.matmul(a, b), sync()), 2 * m * k * n)
        if device == "cpu" and "onnx" in available_backends("cpu"):
            session, feed = _ort_matmul(b.numpy()), {"a": a.numpy()}
            calls[f"onnxruntime {label}"] = (lambda s=session, f=feed: s.run(None, f), 2 * m * k * n)
    return calls


def _ort_matmul(weight: np.ndarray):
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
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(onnx.ModelProto.SerializeToString(model), options,
                                providers=["CPUExecutionProvider"])


# -- the runs -------------------------------------------------------------------------------------
def samplers(checkpoint: Path, generator: FPAGenerator, device: str) -> dict[str, object]:
    """Every backend runnable here, plus the baseline. onnx: both LSTM forms, to compare them."""
    found = {"official-style (eager)": OfficialStyleSampler(load_checkpoint(checkpoint)[0], device)}
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
    if "trt" in available_backends(device):
        from fpa_export.export import build_engine

        for fp16 in (False, True):
            plan = Path(os.environ["FPA_EXPORT_CACHE"]) / f"{checkpoint.stem}-{fp16}.plan"
            engine = build_engine(checkpoint, plan, fp16=fp16, max_batch=4096, exporter="torchscript")
            found[f"TensorRT {'fp16' if fp16 else 'fp32'}"] = make_sampler(engine.path, backend="trt",
                                                                          device=device)
    return found


def bench_model(label: str, checkpoint: Path, batches, device: str, repeats: int, budget_s: float):
    generator = load_checkpoint(checkpoint)[0]
    config = generator.config
    flops = flops_per_image(generator)
    runs = samplers(checkpoint, generator, device)
    matmuls = matmul_calls(FPAConfig(), 64, device)
    z_all = torch.randn(max(batches), config.latent_size, generator=torch.Generator().manual_seed(0))
    reference = runs["torch eager, nn.LSTM"](z_all[:4])
    rows = {name: {"max_abs_diff": float((run(z_all[:4]) - reference).abs().max())}  # same images
            for name, run in runs.items()}
    peaks: dict[str, float] = {}
    for batch in batches:
        calls = {name: (lambda run=run, z=z_all[:batch]: run(z)) for name, run in runs.items()}
        calls.update({name: call for name, (call, _) in matmuls.items()})
        seconds = interleaved_medians(calls, repeats, budget_s)
        for name in runs:
            rows[name][batch] = batch / seconds[name]
            print(f"  {label:8s} {name:28s} batch {batch:5d}: {rows[name][batch]:9.1f} img/s",
                  file=sys.stderr)
        for name, (_, mm_flops) in matmuls.items():
            peaks[name] = max(peaks.get(name, 0.0), mm_flops / seconds[name] / 1e9)
    return {"label": label, "config": config.to_dict(), "flops_per_image": flops, "rows": rows,
            "peaks": peaks}


def summarise(result: dict, batches) -> list[str]:
    """A markdown table and the target ratios for one model."""
    rows, flops, peaks = result["rows"], result["flops_per_image"], result["peaks"]
    baseline = rows["official-style (eager)"]
    peak = max(peaks.values())
    lines = ["| backend | max abs diff | " + " | ".join(f"batch {b}" for b in batches) + " |",
             "|---|---|" + "---|" * len(batches)]
    for name, row in rows.items():
        cells = " | ".join(f"{row[b]:.0f}" for b in batches)
        lines.append(f"| {name} | {row['max_abs_diff']:.1e} | {cells} |")
    lines.append("")
    lines.append("matmul GFLOP/s (best median over the batch rounds): "
                 + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    for batch in batches:
        best_name = max((n for n in rows if n != "official-style (eager)"), key=lambda n: rows[n][batch])
        speed = rows[best_name][batch]
        lines.append(f"- batch {batch}: best = {best_name}, {speed / baseline[batch]:.2f}× the "
                     f"official-style baseline, {speed * flops / 1e9:.0f} GFLOP/s = "
                     f"{100 * speed * flops / 1e9 / peak:.0f} % of the matmul peak ({peak:.0f} GFLOP/s)")
    return lines


@click.command()
@click.option("--device", default="cpu", show_default=True)
@click.option("--batches", default=None, help="Comma-separated batch sizes  [default: by device]")
@click.option("--models", default="paper,default", show_default=True,
              help="paper: FPA_SPEC §2 at T=64, random weights; default: the embedded model.")
@click.option("--threads", type=int, default=None, help="CPU threads  [default: all cores]")
@click.option("--repeats", type=int, default=15, show_default=True, help="Most timed rounds.")
@click.option("--budget", type=float, default=20.0, show_default=True,
              help="Seconds of timed rounds per batch size (fewer rounds for slow calls, never < 3).")
@click.option("--json-out", type=click.Path(dir_okay=False), default=None)
def main(device, batches, models, threads, repeats, budget, json_out):
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
    os.environ.setdefault("FPA_EXPORT_CACHE", tempfile.mkdtemp(prefix="fpa-bench-"))
    with tempfile.TemporaryDirectory() as folder:
        checkpoints = {"paper": save_checkpoint(Path(folder) / "paper.pt", FPAGenerator(FPAConfig())),
                       "default": default_checkpoint_path()}
        results = [bench_model(name, checkpoints[name], batches, device, repeats, budget)
                   for name in models.split(",")]
    print(f"threads: {torch.get_num_threads()}, device: {device}, torch {torch.__version__}")
    for result in results:
        c = result["config"]
        print(f"\n{result['label']}: {c['channels']}×{c['image_size']}², T={c['num_steps']}, "
              f"H={c['hidden_size']}, {result['flops_per_image'] / 1e6:.0f} MFLOP/image; images/s:\n")
        print("\n".join(summarise(result, batches)))
    if json_out:
        Path(json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
