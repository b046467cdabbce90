"""The maintainers' benchmark scripts (tools/bench_sample.py, bench_sampler.py, gpu_check.py) in tiny
modes, so none of them can rot; and the pieces they report with (load warning, fidelity figures)."""
from __future__ import annotations

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

import bench_common as common  # noqa: E402
import bench_sample  # noqa: E402

FAKE_SAMPLER = """
import sys
from pathlib import Path
from PIL import Image
import numpy as np
args = sys.argv[1:]
n, value = int(args[args.index("--n") + 1]), int(args[args.index("--value") + 1])
out = Path(args[args.index("--outdir") + 1]); out.mkdir()
for i in range(n):
    Image.fromarray(np.full((4, 4), value, np.uint8)).save(out / f"{i:06d}.png")
"""


# -- the pieces -------------------------------------------------------------------------------------
def test_load_warning_only_above_half():
    assert common.load_warning({"loadavg": [0.4, 3.0, 3.0]}) is None
    line = common.load_warning({"loadavg": [0.6, 0.1, 0.1]})
    assert "loaded machine: not a result" in line and "0.60" in line


def test_level_stats_counts_levels():
    reference = np.zeros(100, np.uint8)
    other = reference.copy()
    other[0] = 3   # one value 3 levels off: 99 % within 2
    other[1] = 250  # uint8 wrap-around must not hide a difference
    stats = common.level_stats(reference, other)
    assert stats["max_level"] == 250 and stats["within_2_fraction"] == pytest.approx(0.98)
    assert stats["mean_level"] == pytest.approx(2.53) and not stats["passes"]
    other[1] = 0
    assert common.level_stats(reference, other)["passes"]


def test_folder_fidelity_matches_files_by_name(tmp_path):
    for folder, value in (("a", 10), ("b", 11)):
        (tmp_path / folder).mkdir()
        for i in range(3):
            Image.fromarray(np.full((2, 2, 3), value, np.uint8)).save(tmp_path / folder / f"{i:06d}.png")
    (tmp_path / "a" / "000009.png").write_bytes((tmp_path / "a" / "000000.png").read_bytes())
    stats = common.folder_fidelity(tmp_path / "a", tmp_path / "b")
    assert stats["files"] == 3 and stats["mean_level"] == 1.0 and stats["within_2_fraction"] == 1.0
    assert stats["passes"] is False  # mean 1 level > 0.5


def test_cpu_bf16_flag_read_from_cpuinfo(tmp_path):
    (tmp_path / "with").write_text("flags\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    (tmp_path / "without").write_text("flags\t: fpu avx512f avx512_vnni\n")
    assert common.cpu_has_bf16(tmp_path / "with") and not common.cpu_has_bf16(tmp_path / "without")
    assert not common.cpu_has_bf16(tmp_path / "missing")


def test_precision_detection():
    assert common.api_has_precision(lambda model, precision="fp32": None)
    assert not common.api_has_precision(lambda model, **options: None)
    assert common.cli_has_precision([sys.executable, "-c", "print('--precision fp32|bf16')"])
    assert not common.cli_has_precision([sys.executable, "-c", "print('--n')"])


# -- bench_sample.py --------------------------------------------------------------------------------
def fake_contenders(monkeypatch, tmp_path, fail_bf16=False):
    """Fast fake processes: baselines write 0s; fpa-sample writes 100 (fp32) / 101 (bf16) for the
    default model and 50 / 50 for the paper model, so each model's fidelity is known."""
    script = tmp_path / "fake.py"
    script.write_text(FAKE_SAMPLER)
    fake = lambda value: [sys.executable, str(script), "--value", str(value), "--n"]  # noqa: E731

    def sample(checkpoint, n, b, precision):
        if precision and fail_bf16:
            return [sys.executable, "-c", "import sys; sys.exit('bf16 refused here')", "--n", str(n)]
        return fake((101 if precision else 100) if checkpoint is None else 50) + [str(n)]
    monkeypatch.setattr(bench_sample, "baseline_command", lambda kind, checkpoint, n, b: fake(0) + [str(n)])
    monkeypatch.setattr(bench_sample, "sample_command", sample)
    monkeypatch.setattr(bench_sample, "bf16_notes", lambda: (True, []))


def test_bench_sample_harness_picks_better_baseline_and_checks_fidelity(tmp_path, monkeypatch):
    """The better thread setting becomes the baseline, each model's bf16 fidelity comes from its own
    two folders, the JSON holds the load figures."""
    fake_contenders(monkeypatch, tmp_path)
    result = bench_sample.run_benchmark(["default", "paper"], 5, 3, 4, 2, True, True, tmp_path)
    model = result["models"]["default"]
    assert set(model["rows"]) == {"plain loop, default threads", "plain loop, OMP_NUM_THREADS=1",
                                  "fpa-sample fp32", "fpa-sample bf16"}
    assert set(result["models"]["paper"]["rows"]) == {
        "official loop, default threads", "official loop, OMP_NUM_THREADS=1", "fpa-sample fp32",
        "fpa-sample bf16"}
    base = min((r for n, r in model["rows"].items() if "loop" in n), key=lambda r: r["median_s"])
    assert model["rows"][model["baseline"]] is base and base["speedup"] == 1.0
    assert all(len(row["seconds"]) == 2 for row in model["rows"].values())
    assert model["bf16_fidelity"]["files"] == 5 and model["bf16_fidelity"]["mean_level"] == 1.0
    paper = result["models"]["paper"]["bf16_fidelity"]
    assert paper["files"] == 3 and paper["mean_level"] == 0.0 and paper["passes"]
    assert set(result["cold_s"]) == {"default", "paper"} and len(result["machine_start"]["loadavg"]) == 3
    text = bench_sample.report(result)
    assert "FAILS the tolerance" in text and "NOT met" in text and "first use (cold" in text
    assert model["baseline_conditions"] in text
    json.dumps(result)


def test_bench_sample_drops_a_failing_contender(tmp_path, monkeypatch):
    fake_contenders(monkeypatch, tmp_path, fail_bf16=True)
    result = bench_sample.run_benchmark(["default"], 3, 3, 4, 1, False, True, tmp_path)
    assert "fpa-sample bf16" not in result["models"]["default"]["rows"]
    assert any("bf16 refused here" in note for note in result["notes"])


def test_bench_sample_refuses_a_short_folder(tmp_path):
    with pytest.raises(RuntimeError, match="wrote 0 images, expected 2"):
        bench_sample.timed([sys.executable, "-c", "import sys, os; os.mkdir(sys.argv[2])"], {},
                           tmp_path / "out", 2)


@pytest.mark.parametrize("kind", ["plain", "official"])
def test_baseline_loops_write_n_images(tmp_path, kind):
    from official_loop import BASELINES

    checkpoint = common.save_paper_checkpoint(tmp_path / "tiny.pt", tiny=True)
    BASELINES[kind](str(checkpoint), 5, 2, tmp_path / "out")
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 5 and Image.open(files[0]).size == (8, 8)


def test_official_style_sampler_matches_the_generator():
    import torch
    from fpa_export.models import FPAConfig, FPAGenerator
    from official_loop import OfficialStyleSampler

    torch.manual_seed(0)
    generator = FPAGenerator(FPAConfig(**common.TINY_PAPER)).eval()
    z = torch.randn(3, generator.latent_size)
    with torch.no_grad():
        expected = generator(z)
    assert torch.allclose(OfficialStyleSampler(generator)(z), expected, atol=1e-5)


@pytest.mark.slow
def test_bench_sample_runs_for_real(tmp_path):
    """The real contenders (fresh processes, default model), the smallest run that says anything."""
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(TOOLS / "bench_sample.py"), "--models", "default",
                           "--n-default", "4", "--repeats", "1", "--no-warmup", "--json-out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    rows = result["models"]["default"]["rows"]
    assert {"plain loop, default threads", "plain loop, OMP_NUM_THREADS=1", "fpa-sample fp32"} <= set(rows)
    assert "target default" in done.stdout and "load average at start" in done.stdout


# -- bench_sampler.py -------------------------------------------------------------------------------
def sampler_result(graph: float, official: float, peak: float) -> dict:
    return {"label": "paper", "flops_per_image": 1e9,
            "rows": {"official-style (eager)": {64: official}, "onnxruntime, LSTM op": {64: graph}},
            "peaks": {"torch lstm-shaped": peak, "bf16 torch lstm-shaped": 10 * peak}}


def test_bench_sampler_target_line():
    import bench_sampler

    assert bench_sampler.target_line(sampler_result(90, 80, 100), (1, 64)).endswith(": met")
    # 79 % of the fp32 peak (the bf16 matmul peak must not count): not met
    assert "NOT met" in bench_sampler.target_line(sampler_result(79, 70, 100), (64,))
    assert "NOT met" in bench_sampler.target_line(sampler_result(90, 95, 100), (64,))  # slower
    assert "not measured" in bench_sampler.target_line(sampler_result(90, 80, 100), (1, 16))


@pytest.mark.slow
def test_bench_sampler_runs_tiny_with_bf16_rows(tmp_path):
    out = tmp_path / "sampler.json"
    done = subprocess.run([sys.executable, str(TOOLS / "bench_sampler.py"), "--tiny", "--models", "paper",
                           "--batches", "2,64", "--repeats", "3", "--budget", "0.05", "--threads", "1",
                           "--bf16", "on", "--json-out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["results"][0]["rows"]
    assert {"bf16: torch eager, autocast", "bf16: torch eager, bf16 weights"} <= set(rows)
    assert rows["bf16: torch eager, autocast"]["max_abs_diff"] > 0  # really ran in bf16
    assert "target: fp32 exported graph, paper model, batch 64" in done.stdout


# -- gpu_check.py -----------------------------------------------------------------------------------
def tiny_target(tmp_path):
    from fpa_export import load_generator
    from gpu_contenders import Target

    checkpoint = common.save_paper_checkpoint(tmp_path / "tiny.pt", tiny=True)
    return Target("paper", checkpoint, load_generator(checkpoint), "cpu", tmp_path, 4)


def test_gpu_check_guards_each_contender(tmp_path, monkeypatch):
    """A failing contender is an error row, a slow one is stopped by its alarm, an exhausted budget
    skips: none of them aborts the run."""
    import time as clock

    import gpu_check

    target = tiny_target(tmp_path)
    latents = {2: __import__("torch").zeros(2, target.generator.latent_size)}

    def broken(target, precision):
        raise RuntimeError("no kernel for this")

    def slow(target, precision):
        clock.sleep(5)

    monkeypatch.setitem(gpu_check.BACKENDS, "broken", broken)
    monkeypatch.setitem(gpu_check.BACKENDS, "slow", slow)
    monkeypatch.setattr(gpu_check, "CONTENDER_CAP_S", 1.0)
    budget = gpu_check.Budget(60, reserve_s=0)
    row = gpu_check.run_contender(target, "broken", "fp32", latents, None, 2, budget, 0.0)
    assert row["status"] == "error" and "no kernel for this" in row["note"]
    start = clock.monotonic()
    row = gpu_check.run_contender(target, "slow", "fp32", latents, None, 2, budget, 0.0)
    assert row["status"] == "error" and "TimeoutError" in row["note"] and clock.monotonic() - start < 4
    row = gpu_check.run_contender(target, "broken", "fp32", latents, None, 2,
                                  gpu_check.Budget(10, reserve_s=10), 0.0)
    assert row == {**row, "status": "skipped", "note": "time budget"}


def test_gpu_check_latency_target():
    import gpu_check

    def row(backend, latency, precision="fp32"):
        return {"model": "paper", "backend": backend, "precision": precision, "status": "ok",
                "latency_ms_b1": latency, "max_level_diff": 0}

    rows = [row("torch eager", 10.0), row("torch CUDA graphs", 1.9), row("torch eager", 0.5, "bf16")]
    assert gpu_check.latency_targets(rows)[0].endswith(": met")  # 10 / 1.9 = 5.3×; eager bf16 not a rival
    rows[1]["latency_ms_b1"] = 2.5
    assert "NOT met" in gpu_check.latency_targets(rows)[0]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    done = subprocess.run([sys.executable, str(TOOLS / "gpu_check.py"), "--dry-run", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {(r["model"], r["backend"], r["precision"]): r for r in result["rows"]}
    assert len(rows) == 2 * 6 * 3
    reference = rows[("paper", "torch eager", "fp32")]
    assert reference["status"] == "ok" and reference["max_abs_diff"] == 0.0
    assert set(reference["images_per_s"]) == {"1", "4", "8"} and reference["latency_ms_b1"] > 0
    assert rows[("default", "torch CUDA graphs", "fp16")] == {
        **rows[("default", "torch CUDA graphs", "fp16")], "status": "skipped", "note": "needs CUDA"}
    eager_fp16 = rows[("default", "torch eager", "fp16")]  # the CPU cannot run it: skipped, not an error
    assert eager_fp16["status"] == "skipped" and "CUDA" in eager_fp16["note"], eager_fp16
    assert result["e2e"][0]["status"] == "ok" and result["e2e"][0]["n"] == 16
    assert "DRY RUN" in (tmp_path / "gpu_check.md").read_text()
