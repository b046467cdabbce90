"""`fpa-train --out RUN --resume` alone continues the run: options left out keep the run's values, a given
model or discriminator option must equal the run's (one line otherwise), a given recipe option (--lr)
overrides it and is really used."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from fpa_export.models import read_checkpoint
from fpa_export.training.api import train_fpa
from fpa_export.training.cli import main
from fpa_export.training.loop import TrainingError
from tests.conftest import tiny_config
from tests.test_train_run import TINY_D_ARGS, TINY_MODEL_ARGS, options, train_config

pytest.importorskip("sklearn")  # the 'digits' data


def cli(*args):
    return CliRunner().invoke(main, [*args, "--no-progress"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-step run with a non-default model, discriminator, recipe and data."""
    out = tmp_path_factory.mktemp("resume") / "run"
    result = cli("--data", "digits", *TINY_MODEL_ARGS, *TINY_D_ARGS, "--batch-size", "3", "--lr", "3e-4",
                 "--aug-prob", "0.5", "--gp-every", "3", "--seed", "7", "--log-every", "1",
                 "--eval-every", "0", "--save-every", "1", "--steps", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def state(out):
    ckpt = read_checkpoint(out / "latest.pt")
    return ckpt, ckpt["train_state"]["train_config"]


def test_resume_alone_continues_with_the_runs_model_recipe_and_data(run, tmp_path):
    before_model, before_train = state(run)
    result = cli("--out", str(run), "--resume", "--steps", "3")
    assert result.exit_code == 0, result.output
    after, train = state(run)
    assert after["step"] == 3 and after["config"] == before_model["config"]
    assert train == before_train and train["lr"] == 3e-4 and train["batch_size"] == 3
    assert train["fmap_max"] == 16 and train["aug_prob"] == 0.5 and train["seed"] == 7
    config = json.loads((run / "config.json").read_text())
    assert config["run"]["data"] == "digits" and config["run"]["steps"] == 3  # not mnist, not 10000
    assert "Resuming with --steps 3 (the run had 2)" in result.output


@pytest.mark.parametrize("args, message", [
    (["--hidden-size", "32"], "--hidden-size 32: the run in {run} has 16; a resumed run keeps its model"),
    (["--channels", "3"], "--channels 3: the run in {run} has 1"),
    (["--fmap-max", "64"], "--fmap-max 64: the run in {run} has 16; a resumed run keeps its discriminator"),
    (["--d-preset", "paper"], "--d-preset paper: the run in {run} has --fmap-max 16, not 512"),
])
def test_a_given_model_or_discriminator_option_must_fit_the_run(run, args, message):
    before = (run / "latest.pt").read_bytes()
    result = cli("--out", str(run), "--resume", "--steps", "9", *args)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert message.format(run=run) in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert (run / "latest.pt").read_bytes() == before  # nothing written


def test_a_given_lr_overrides_the_run_and_adam_really_uses_it(tmp_path, run):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("latest.pt", "config.json", "log.jsonl"):
        (copy / name).write_bytes((run / name).read_bytes())
    steps = read_checkpoint(copy / "latest.pt")["step"] + 1
    result = cli("--out", str(copy), "--resume", "--steps", str(steps), "--lr", "1e-4")
    assert result.exit_code == 0, result.output
    assert "--lr 0.0001 (the run had 0.0003)" in result.output
    train_state = read_checkpoint(copy / "latest.pt")["train_state"]
    assert train_state["train_config"]["lr"] == 1e-4
    for opt in ("opt_g", "opt_d"):  # Adam's saved state would bring 3e-4 back without the fix
        assert {group["lr"] for group in train_state[opt]["param_groups"]} == {1e-4}


def test_api_resume_with_another_model_names_the_fields(tmp_path):
    out = tmp_path / "run"
    train_fpa(out, tiny_config(image_size=16), train_config(), options(data="digits", steps=1))
    other = tiny_config(image_size=16).replace(hidden_size=24)
    with pytest.raises(TrainingError, match=r"the run's model has hidden_size 16 \(this run: 24\)"):
        train_fpa(out, other, train_config(), options(data="digits", steps=2), resume=True)
    with pytest.raises(TrainingError, match="its discriminator does not fit this run .*discriminator options"):
        train_fpa(out, tiny_config(image_size=16), train_config(fmap_max=32), options(data="digits", steps=2),
                  resume=True)
    assert read_checkpoint(out / "latest.pt")["step"] == 1
    assert torch.isfinite(read_checkpoint(out / "latest.pt")["state_dict"]["latent_to_init.weight"]).all()


def test_unet_stage_resume_keeps_its_unet(run, tmp_path):
    out = tmp_path / "unet"
    common = ["unet", "--from", str(run / "latest.pt"), "--out", str(out), "--eval-every", "0"]
    first = cli(*common, "--data", "digits", "--unet-dim", "8", "--unet-dim-mults", "1,2", "--batch-size", "3",
                "--steps", "1", "--save-every", "1")
    assert first.exit_code == 0, first.output
    again = cli(*common, "--resume", "--steps", "2")          # no --data, --unet-dim, --batch-size
    assert again.exit_code == 0, again.output
    ckpt = read_checkpoint(out / "latest.pt")
    assert ckpt["step"] == 2 and ckpt["config"]["unet"]["dim"] == 8
    assert json.loads((out / "config.json").read_text())["run"]["data"] == "digits"
    wrong = cli(*common, "--resume", "--steps", "3", "--unet-dim-mults", "1,2,4")
    assert wrong.exit_code != 0 and "--unet-dim-mults 1,2,4: the run in" in wrong.output


def copy_run(run, folder):
    folder.mkdir()
    for name in ("latest.pt", "config.json", "log.jsonl"):
        (folder / name).write_bytes((run / name).read_bytes())
    return folder, read_checkpoint(folder / "latest.pt")["step"]


@pytest.mark.parametrize("damage", ["missing", "truncated", "not an object"])
def test_a_lost_config_json_is_refused_unless_data_is_given(run, tmp_path, damage):
    copy, step = copy_run(run, tmp_path / "copy")
    config = copy / "config.json"
    if damage == "missing":
        config.unlink()
    else:
        config.write_text(config.read_text()[:40] if damage == "truncated" else "[1, 2]")
    before = (copy / "latest.pt").read_bytes()
    result = cli("--out", str(copy), "--resume", "--steps", str(step + 1))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "config.json: missing or unreadable" in result.output and "--data" in result.output
    assert (copy / "latest.pt").read_bytes() == before
    given = cli("--out", str(copy), "--resume", "--steps", str(step + 1), "--data", "digits")
    assert given.exit_code == 0, given.output
    assert "run options not given at their defaults" in given.output
    assert json.loads(config.read_text())["run"]["data"] == "digits"


def test_a_resume_that_fails_before_its_first_checkpoint_keeps_the_runs_config(run, tmp_path):
    copy, step = copy_run(run, tmp_path / "copy")
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    for i in range(3):
        (unreadable / f"{i}.png").write_bytes(b"not a png")
    before = (copy / "config.json").read_bytes()
    failed = cli("--out", str(copy), "--resume", "--steps", str(step + 1), "--data", str(unreadable))
    assert failed.exit_code != 0 and "Traceback" not in failed.output, failed.output
    assert (copy / "config.json").read_bytes() == before
    again = cli("--out", str(copy), "--resume", "--steps", str(step + 1))  # the run's own data: digits
    assert again.exit_code == 0, again.output
    assert json.loads((copy / "config.json").read_text())["run"]["steps"] == step + 1


def test_a_resumed_unet_run_refuses_another_from(run, tmp_path):
    other = tmp_path / "other.pt"
    other.write_bytes((run / "latest.pt").read_bytes())
    out = tmp_path / "unet"
    first = cli("unet", "--from", str(run / "latest.pt"), "--out", str(out), "--eval-every", "0", "--data",
                "digits", "--unet-dim", "8", "--unet-dim-mults", "1", "--batch-size", "2", "--steps", "1")
    assert first.exit_code == 0, first.output
    before = (out / "config.json").read_bytes()
    wrong = cli("unet", "--from", str(other), "--out", str(out), "--resume", "--steps", "2")
    assert wrong.exit_code == 1 and "Traceback" not in wrong.output
    assert f"--from {other}: the run in {out} was started from {run / 'latest.pt'}" in wrong.output
    assert len(wrong.output.strip().splitlines()) == 1 and (out / "config.json").read_bytes() == before
    plain = cli("--out", str(out), "--resume", "--steps", "2")  # a U-Net run resumed as an FPA run
    assert plain.exit_code == 1 and len(plain.output.strip().splitlines()) == 1, plain.output
    assert f"holds a U-Net run; resume it with: fpa-train unet --out {out} --resume" in plain.output
    copy, step = copy_run(run, tmp_path / "copy")
    staged = cli("unet", "--from", str(run / "latest.pt"), "--out", str(copy), "--resume", "--steps", "9")
    assert staged.exit_code == 1 and "holds an FPA run, not a U-Net run" in staged.output
    assert read_checkpoint(copy / "latest.pt")["step"] == step


def test_a_resume_whose_first_save_fails_keeps_the_runs_config(run, tmp_path, monkeypatch):
    import errno

    from fpa_export.training import loop

    copy, step = copy_run(run, tmp_path / "copy")
    before = {name: (copy / name).read_bytes() for name in ("config.json", "latest.pt")}

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loop, "save_checkpoint", disk_full)
    failed = cli("--out", str(copy), "--resume", "--steps", str(step + 1), "--lr", "1e-4")
    assert failed.exit_code == 1 and "No space left on device" in failed.output, failed.output
    assert {name: (copy / name).read_bytes() for name in before} == before


def test_a_data_folder_named_like_a_built_in_set_is_the_folder(tmp_path, monkeypatch):
    from tests.test_train_data import make_folder

    make_folder(tmp_path / "digits")
    monkeypatch.chdir(tmp_path)
    result = cli("--data", "./digits/", *TINY_MODEL_ARGS, *TINY_D_ARGS, "--batch-size", "2", "--steps", "1",
                 "--eval-every", "0", "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["run"]["data"]
    assert recorded == str(tmp_path / "digits")  # the folder, by its absolute path
    assert "unreadable image(s) skipped" in result.output  # make_folder's bad file: the folder was read
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "digits").mkdir(parents=True)  # an empty folder of that name where it resumes
    monkeypatch.chdir(elsewhere)
    again = cli("--out", str(tmp_path / "run"), "--resume", "--steps", "2")
    assert again.exit_code == 0, again.output  # not "no images found": the run's own folder is read
    given = cli("--out", str(tmp_path / "run"), "--resume", "--steps", "3", "--data", "../digits")
    assert given.exit_code == 0 and "--data" not in given.output, given.output  # the same folder
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["run"]["data"] == recorded and config["run"]["steps"] == 3


@pytest.mark.parametrize("field, value, flag, given", [
    ("log_every", None, "--log-every", "1"), ("log_every", "often", "--log-every", "1"),
    ("eval_count", 1, "--eval-count", "10"), ("sample_every", [1], "--sample-every", "5"),
    ("metric", "fid", "--metric", "pixel"), ("data", None, "--data", "digits"),
    ("log_every", 1.5, "--log-every", "1"), ("steps", True, "--steps", "9"), ("data", "", "--data", "digits"),
    ("data", 5, "--data", "digits"),
])
def test_a_config_json_value_the_option_does_not_take_is_one_line(run, tmp_path, field, value, flag,
                                                                    given):
    copy, step = copy_run(run, tmp_path / "copy")
    config = copy / "config.json"
    record = json.loads(config.read_text())
    record["run"][field] = value
    config.write_text(json.dumps(record))
    before = (copy / "latest.pt").read_bytes()
    steps = [] if field == "steps" else ["--steps", str(step + 1)]
    result = cli("--out", str(copy), "--resume", *steps)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert f"config.json: the run's {flag} is {value!r}, which {flag} does not take" in result.output
    assert (copy / "latest.pt").read_bytes() == before and json.loads(config.read_text()) == record
    fixed = cli("--out", str(copy), "--resume", "--steps", str(step + 1), flag, given)
    assert fixed.exit_code == 0, fixed.output



def test_a_run_option_config_json_does_not_record_is_refused_or_named(run, tmp_path):
    copy, step = copy_run(run, tmp_path / "copy")
    config = copy / "config.json"
    record = json.loads(config.read_text())
    del record["run"]["data"], record["run"]["eval_every"]
    config.write_text(json.dumps(record))
    refused = cli("--out", str(copy), "--resume", "--steps", str(step + 1))
    assert refused.exit_code == 1 and "records no --data" in refused.output, refused.output
    given = cli("--out", str(copy), "--resume", "--steps", str(step + 1), "--data", "digits")
    assert given.exit_code == 0, given.output
    assert "--eval-every at the default (config.json does not record the run's)" in given.output
