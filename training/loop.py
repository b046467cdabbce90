"""A training run: the run folder, the loop, logging, sample grids, checkpoints and resume.

Run folder (`out`):
    config.json      model config, training config and run options (at the start; on a resume, with its
                     first latest.pt)
    log.jsonl        one JSON line per logged step: losses, images/s, metric when measured
    samples/step_NNNNNNN.png   8×8 grid of the EMA generator on fixed latents
    latest.pt        last checkpoint, with train_state (resume from it)
    best.pt          checkpoint with the lowest quality metric so far (with train_state, like the official
                     model_1.pt, so `fpa-train unet --from best.pt` can continue its raw G and D); its
                     metrics record which metric and how many samples chose it
Every file is written atomically; a run killed at any moment resumes from latest.pt with optimisers,
discriminator, raw and EMA generators, step, data position and RNG state. Ctrl-C loses nothing: the
step in progress finishes and latest.pt is saved before the run stops (`_StopRequest`).
"""
from __future__ import annotations

import io
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from fpa_export.common.errors import FpaError
from fpa_export.common.atomic import atomic_write, atomic_write_json
from fpa_export.models import FPAConfig, save_checkpoint
from fpa_export.common.images import arrange, grid, to_hwc, to_uint8
from . import data as datasets
from . import quality, runfolder
from .ema import ema_notice, ema_record
from .trainer import DISCRIMINATOR_FIELDS, StateMismatch, TrainConfig, Trainer


class TrainingError(FpaError, RuntimeError):
    """A run that cannot start or continue; the message is one line."""


@dataclass(frozen=True)
class RunOptions:
    data: str = "mnist"
    steps: int = 10000
    device: str = "cpu"
    log_every: int = 10
    sample_every: int = 500
    save_every: int = 500
    eval_every: int = 1000          # quality metric (and best.pt) every this many steps; 0 = never
    eval_count: int = 1000          # images per side for the quality metric
    metric: str = "pixel"           # quality metric: 'pixel' or 'rvgg' (training.quality)
    progress: bool = True


def _save_grid(path: Path, images: torch.Tensor, nrow: int = 8) -> None:
    """(N, C, S, S) in [-1, 1] → a PNG grid (clamped to [0, 1], 2-px grey padding)."""
    from PIL import Image

    array = to_hwc(grid(arrange(to_uint8(images).cpu().numpy(), nrow)))

    def write(handle):
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        handle.write(buffer.getvalue())
    atomic_write(path, write)


def _write_json(path: Path, obj) -> None:
    atomic_write_json(path, obj, sort_keys=False)


def _logged_step(line: str) -> float:
    """The step of a log line; a torn or foreign line (a kill -9 mid-write) counts as after every step."""
    try:
        record = json.loads(line)
    except ValueError:
        return math.inf
    step = record.get("step", 0) if isinstance(record, dict) else math.inf
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) else math.inf


class _StopRequest:
    """Ctrl-C in a single-process run on the main thread: the step in progress finishes, latest.pt is
    saved, then KeyboardInterrupt is raised as before; a second Ctrl-C interrupts at once. Elsewhere
    (DDP ranks, a thread, a SIGINT handler of the caller's own) Ctrl-C interrupts at once, and the run
    resumes from the last periodic latest.pt."""

    def __init__(self, enabled: bool):
        self.enabled, self.requested, self.previous = enabled, False, None

    def __enter__(self) -> "_StopRequest":
        if (self.enabled and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)  # a second Ctrl-C interrupts at once
        _say("Ctrl-C: finishing this step and saving latest.pt (Ctrl-C again to stop at once) …")

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


class Run:
    """Owns a Trainer plus the run folder; `train()` loops until `options.steps`."""

    def __init__(self, out: str | Path, trainer: Trainer, source, options: RunOptions,
                 rank: int = 0, world_size: int = 1, meta: Optional[dict] = None):
        self.out, self.trainer, self.source, self.options = Path(out), trainer, source, options
        self.rank, self.world_size, self.is_main = rank, world_size, rank == 0
        self.meta = meta or {}
        self.best = math.inf
        cfg = trainer.config
        self.fixed_z = torch.randn(64, trainer.generator.latent_size,
                                   generator=torch.Generator().manual_seed(cfg.seed)).to(trainer.device)
        self.real_stats = None
        self.config_due = False  # write config.json with the next latest.pt (set on resume)

    # -- files --------------------------------------------------------------------------------------
    def write_config(self) -> None:
        if self.is_main:
            _write_json(self.out / "config.json", {
                "model": self.trainer.generator.config.to_dict(), "train": self.trainer.config.to_dict(),
                "run": dict(self.options.__dict__), "world_size": self.world_size, **self.meta})

    def _log(self, record: dict) -> None:
        if self.is_main:
            with open(self.out / "log.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    def truncate_log(self, step: int) -> None:
        """Drop log lines written after `step` (on resume, the checkpoint's; on a fresh start, 0) so
        the curve continues cleanly, without a killed run's steps twice."""
        path = self.out / "log.jsonl"
        if not self.is_main or not path.exists():
            return
        kept = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                if _logged_step(line) <= step]
        atomic_write(path, lambda h: h.write("".join(line + "\n" for line in kept).encode()))

    def save(self, name: str, metrics: Optional[dict] = None, with_state: bool = True) -> None:
        if not self.is_main:
            return
        t = self.trainer
        state = t.state() if with_state else None
        if state is not None:
            state.update(best=self.best, data_batches=t.step_count * t.config.grad_accum)
        save_checkpoint(self.out / name, t.ema_generator, step=t.step_count, train_state=state,
                        metrics=metrics, source={"run": str(self.out.name), "data": self.options.data},
                        ema=ema_record(t.config.ema, t.step_count))
        if name == "latest.pt" and self.config_due:  # after the checkpoint: a failed save changes neither
            self.write_config()
            self.config_due = False

    def sample_grid(self) -> None:
        """EMA samples (step_N.png) and, to follow training while the EMA is a stale copy between the
        schedule's resets, the raw generator's (step_N_raw.png), both on the same fixed latents."""
        if not self.is_main:
            return
        t, name = self.trainer, f"step_{self.trainer.step_count:07d}"
        with torch.no_grad():
            _save_grid(self.out / "samples" / f"{name}.png", t.ema_generator(self.fixed_z).cpu())
            was_training = t.generator.training
            _save_grid(self.out / "samples" / f"{name}_raw.png", t.generator.eval()(self.fixed_z).cpu())
            t.generator.train(was_training)

    def resume(self) -> int:
        """Load latest.pt; returns the step to continue from. Nothing to resume, or a run already past
        --steps, is an error (a silent fresh start or a silent no-op would hide the mistake)."""
        path = self.out / "latest.pt"
        if not path.exists():
            raise TrainingError(f"{self.out}: nothing to resume (no latest.pt); drop --resume to start "
                                "a new run there")
        ckpt = runfolder.read_latest(self.out)
        if int(ckpt["step"]) >= self.options.steps:
            raise TrainingError(f"{path}: the run is already at step {ckpt['step']}, --steps is "
                                f"{self.options.steps}; pass a larger --steps to continue it")
        state = ckpt.get("train_state")
        if not state:
            raise TrainingError(f"{path}: has no train_state, cannot resume")
        theirs = FPAConfig.from_dict(ckpt["config"]).to_dict()
        ours = self.trainer.generator.config.to_dict()
        differ = [f"{key} {theirs[key]} (this run: {ours[key]})" for key in theirs if theirs[key] != ours[key]]
        if differ:
            raise TrainingError(f"{path}: the run's model has {', '.join(differ)}; resume with the run's "
                                "model options, or start a new run with another --out")
        try:
            self.trainer.load_state(state, ckpt["state_dict"], ckpt["step"])
        except StateMismatch as err:
            own = TrainConfig.from_dict(state["train_config"])  # parses: `state_problem`
            if err.part in StateMismatch.DISCRIMINATOR_PARTS and any(
                    getattr(own, key) != getattr(self.trainer.config, key) for key in DISCRIMINATOR_FIELDS):
                raise TrainingError(f"{path}: its {err.part} does not fit this run ({err.detail}); resume "
                                    "with the run's discriminator options (as latest.pt's train_config)") \
                    from None
            raise TrainingError(f"{path}: {err}, though this run has the options it records (edited or "
                                "damaged since fpa-train wrote it?); restore it, or resume from best.pt") \
                from None
        self.best = float(state.get("best", math.inf))
        self.truncate_log(ckpt["step"])
        # The settings the run goes on with are written with its next latest.pt, so a resume that fails
        # first (unreadable --data, a non-finite loss, out of memory) leaves the run's config.json as it was.
        self.config_due = True
        return int(ckpt["step"])

    # -- metric ---------------------------------------------------------------------------------------
    def measure(self) -> float:
        t, opts = self.trainer, self.options
        if self.real_stats is None:
            order = datasets.epoch_order(len(self.source), t.config.seed, -1)[:opts.eval_count].tolist()
            reals = (self.source.batch(order[i:i + 250])[0] for i in range(0, len(order), 250))
            self.real_stats = quality.image_stats(reals, opts.metric, t.device)
        return quality.generator_fd(t.ema_generator, self.real_stats, opts.metric, opts.eval_count,
                                    device=t.device, seed=t.config.seed)

    # -- the loop -----------------------------------------------------------------------------------
    def train(self) -> dict:
        t, opts = self.trainer, self.options
        self.out.mkdir(parents=True, exist_ok=True)
        start = t.step_count
        if self.world_size > 1:  # each rank its own latents and augmentation draws, reproducibly
            torch.manual_seed(t.config.seed * 1_000_003 + start * 1_009 + self.rank)
        stream = datasets.batches(self.source, t.config.batch_size, t.config.seed,
                                  start=start * t.config.grad_accum, rank=self.rank,
                                  world_size=self.world_size)
        notice = ema_notice(t.config.ema, opts.steps)
        if notice and self.is_main:
            _say(notice)
        bar = _progress(start, opts.steps, opts.progress and self.is_main)
        speed = _SpeedReport(start, opts.steps, self.is_main)
        with _StopRequest(self.world_size == 1) as stop:
            stats = self._loop(stream, bar, speed, stop)
        if bar is not None:
            bar.close()
        return {"step": t.step_count, "best": self.best, **stats}

    def _loop(self, stream, bar, speed: "_SpeedReport", stop: _StopRequest) -> dict:
        t, opts = self.trainer, self.options
        tick, images_done, stats = time.perf_counter(), 0, {}
        while t.step_count < opts.steps:
            micro = [next(stream) for _ in range(t.config.grad_accum)]
            began = time.perf_counter()
            stats = t.step(micro)
            speed.add(time.perf_counter() - began)
            images_done += sum(m.shape[0] for m in micro) * self.world_size
            if not self._all_finite(stats):
                latest = self.out / "latest.pt"
                advice = (f"The last good checkpoint is {latest}; resume from it with a lower --lr"
                          if latest.is_file() else "No checkpoint was saved yet: run the command again "
                          "with a lower --lr")
                raise TrainingError(f"non-finite loss at step {t.step_count} ({_fmt(stats)}); "
                                    f"stopped. {advice}")
            step = t.step_count
            if step % opts.log_every == 0 or step == opts.steps:
                rate = images_done / max(1e-9, time.perf_counter() - tick)
                tick, images_done = time.perf_counter(), 0
                record = {"step": step, **{k: round(v, 5) for k, v in stats.items()
                                            if isinstance(v, float)}, "img_per_s": round(rate, 1)}
                if getattr(self.source, "skipped", 0):
                    record["skipped_files"] = self.source.skipped
                if t.gp_skipped:
                    record["gp_skipped"] = t.gp_skipped  # NaN gradient penalties skipped so far
                self._log(record)
                if bar is not None:
                    losses = (f"imle {stats['imle']:.4f}" if "imle" in stats
                              else f"d {stats['d_loss']:.3f} g {stats['g_loss']:.3f}")
                    bar.set_postfix_str(f"{losses} {rate:.0f} img/s")
            self._periodic(step)
            if bar is not None:
                bar.update(1)
            if stop.requested and step < opts.steps:
                if step % opts.save_every:  # else `_periodic` has just saved it
                    self.save("latest.pt")
                if bar is not None:
                    bar.close()
                _say(f"Stopped after step {step}; latest.pt saved.")
                raise KeyboardInterrupt
        return stats

    def _all_finite(self, stats: dict) -> bool:
        """True when every rank's losses are finite (agreed by all ranks, so none waits forever)."""
        finite = all(math.isfinite(v) for v in stats.values() if isinstance(v, float))
        if self.world_size == 1:
            return finite
        flag = torch.tensor([1.0 if finite else 0.0], device=self.trainer.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        return bool(flag.item())

    def _periodic(self, step: int) -> None:
        opts, final = self.options, step == self.options.steps
        metrics = None
        if opts.eval_every and (step % opts.eval_every == 0 or final) and self.is_main:
            value = self.measure()
            metrics = {f"fd_{opts.metric}": value,
                       "selected_by": {"metric": f"fd_{opts.metric}", "samples": opts.eval_count,
                                       "real_images": int(self.real_stats.n), "lower_is_better": True}}
            self._log({"step": step, f"fd_{opts.metric}": round(value, 6)})
            if value < self.best:
                self.best = value
                self.save("best.pt", metrics=metrics)
        if step % opts.sample_every == 0 or final:
            self.sample_grid()
        if step % opts.save_every == 0 or final:
            self.save("latest.pt", metrics=metrics)


class _SpeedReport:
    """After the first few steps, one line with the measured time per step and per 1,000 steps
    (the first step, which warms up allocators and kernels, is left out of the estimate)."""

    SAMPLE = 5

    def __init__(self, start: int, total: int, enabled: bool):
        self.remaining, self.enabled, self.times = total - start, enabled, []

    def add(self, seconds: float) -> None:
        if not self.enabled:
            return
        self.times.append(seconds)
        if len(self.times) == min(self.SAMPLE, self.remaining):
            self.enabled = False
            timed = self.times[1:] or self.times
            per_step = sum(timed) / len(timed)
            _say(f"Speed: {per_step:.3g} s/step → about {_duration(1000 * per_step)} per 1,000 steps, "
                 f"{_duration(self.remaining * per_step)} for this run's {self.remaining} steps "
                 "(training steps only, measured on the first steps)")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _say(line: str) -> None:
    """A one-line notice on stderr (stdout keeps the final summary)."""
    print(line, file=sys.stderr, flush=True)


def _fmt(stats: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in stats.items() if isinstance(v, float))


def _progress(start: int, total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    # Off a terminal (logs, pipes, CI) no bar: carriage-return frames would fill the log; the step
    # lines and the speed line still report progress.
    return tqdm(initial=start, total=total, unit="step", dynamic_ncols=True, disable=None)
