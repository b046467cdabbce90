"""Training sized to the machine (the D preset that follows the generator's size, the speed line) and
`--resume` mistakes that used to pass silently."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fpa_export.training.api import train_fpa
from fpa_export.training.cli import D_PRESETS, main, resolve_d_preset
from fpa_export.training.loop import TrainingError
from tests.conftest import tiny_config
from tests.test_train_run import TINY_MODEL_ARGS, options, train_config


def test_d_preset_auto_follows_the_generator_size_and_explicit_options_win():
    unset = dict(d_preset="auto", fmap_max=None, d_attn_res=None, d_attn_heads=None, d_attn_dim_head=None)
    small = resolve_d_preset(unset, hidden_size=256)
    assert small["d_preset"] == "cpu-small" and small["fmap_max"] == 64 and small["d_attn_res"] == ""
    paper = resolve_d_preset(unset, hidden_size=1024)
    assert paper["d_preset"] == "paper" and paper["fmap_max"] == 512 and paper["d_attn_heads"] == 8
    mixed = resolve_d_preset({**unset, "d_preset": "paper", "fmap_max": 32}, hidden_size=16)
    assert mixed["fmap_max"] == 32 and mixed["d_attn_dim_head"] == D_PRESETS["paper"]["d_attn_dim_head"]


def cli(out, *extra):
    return CliRunner().invoke(main, ["--data", "mnist", *TINY_MODEL_ARGS, "--batch-size", "4",
                                     "--log-every", "1", "--eval-every", "0", "--no-progress",
                                     "--out", str(out), *extra])


def test_cli_small_generator_gets_the_small_discriminator_and_a_speed_line(tmp_path):
    pytest.importorskip("mlxtend")
    result = cli(tmp_path / "r", "--steps", "3")
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert train["fmap_max"] == 64 and train["attn_res_layers"] == [] and train["attn_heads"] == 2
    assert "per 1,000 steps" in result.output  # CliRunner mixes stderr into output


def test_resume_with_nothing_to_resume_is_an_error(tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train_fpa(tmp_path / "new", tiny_config(image_size=16), train_config(), options(steps=1), resume=True)
    assert not (tmp_path / "new" / "latest.pt").exists()


def test_resume_with_fewer_steps_than_done_is_an_error_saying_so(tmp_path):
    pytest.importorskip("mlxtend")
    assert cli(tmp_path / "r", "--steps", "3").exit_code == 0
    result = cli(tmp_path / "r", "--steps", "2", "--resume")
    assert result.exit_code == 1
    assert "already at step 3" in result.output and "--steps" in result.output
    assert "Traceback" not in result.output
