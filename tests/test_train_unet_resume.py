"""A U-Net run resumes from its own latest.pt: --from may be left out and its file may be gone, the
run's record of where its frozen FPA came from is kept, and the resumed run continues exactly."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from fpa_export.models import read_checkpoint
from fpa_export.training.cli import main
from tests.test_train_run import TINY_D_ARGS, TINY_MODEL_ARGS

pytest.importorskip("sklearn")  # the 'digits' data


def cli(*args):
    return CliRunner().invoke(main, [*map(str, args), "--no-progress"])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 2-step FPA run on the built-in digits."""
    out = tmp_path_factory.mktemp("unet-resume") / "fpa"
    result = cli("--data", "digits", *TINY_MODEL_ARGS, *TINY_D_ARGS, "--batch-size", "3", "--eval-every", "0",
                 "--steps", "2", "--out", out)
    assert result.exit_code == 0, result.output
    return out


UNET = ["--data", "digits", "--unet-dim", "8", "--unet-dim-mults", "1", "--batch-size", "2", "--eval-every",
        "0", "--save-every", "1"]


def test_a_unet_run_resumes_without_its_source_and_keeps_its_record(source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(source, src)
    out = tmp_path / "unet"
    first = cli("unet", "--from", src / "latest.pt", "--out", out, *UNET, "--steps", "1")
    assert first.exit_code == 0, first.output
    record = json.loads((out / "config.json").read_text())
    assert record["from"] == str(src / "latest.pt") and record["from_step"] == 2
    weights = read_checkpoint(out / "latest.pt")["state_dict"]
    frozen = {key: value for key, value in weights.items() if not key.startswith("unet.")}
    more = cli("--out", src, "--resume", "--steps", "3")  # the source run trains on
    assert more.exit_code == 0, more.output
    again = cli("unet", "--from", src / "latest.pt", "--out", out, "--resume", "--steps", "2")
    assert again.exit_code == 0, again.output
    after = json.loads((out / "config.json").read_text())
    assert (after["from"], after["from_step"], after["base"]) == (record["from"], 2, record["base"])
    shutil.rmtree(src)  # the source is gone: the run's latest.pt holds its frozen FPA
    last = cli("unet", "--out", out, "--resume", "--steps", "3")
    assert last.exit_code == 0, last.output
    ckpt = read_checkpoint(out / "latest.pt")
    assert ckpt["step"] == 3 and json.loads((out / "config.json").read_text())["from_step"] == 2
    for key, value in frozen.items():
        assert torch.equal(ckpt["state_dict"][key], value), key  # still the step-2 FPA, bit for bit


def test_a_resumed_unet_run_continues_exactly(source, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    for out, steps in ((straight, 2), (split, 1)):
        result = cli("unet", "--from", source / "latest.pt", "--out", out, *UNET, "--steps", steps)
        assert result.exit_code == 0, result.output
    resumed = cli("unet", "--out", split, "--resume", "--steps", "2")
    assert resumed.exit_code == 0, resumed.output
    a, b = read_checkpoint(straight / "latest.pt"), read_checkpoint(split / "latest.pt")
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for key in a["train_state"]["discriminator"]:
        assert torch.equal(a["train_state"]["discriminator"][key],
                           b["train_state"]["discriminator"][key]), key


def test_from_is_needed_to_start_and_default_names_the_embedded_model(tmp_path):
    missing = cli("unet", "--out", tmp_path / "u", *UNET, "--steps", "1")
    assert missing.exit_code == 2 and "Missing option '--from'" in missing.output
    assert not (tmp_path / "u").exists()
    result = cli("unet", "--from", "default", "--base", "ema", "--fresh-d", "--out", tmp_path / "d",
                 "--data", "digits", "--unet-dim", "8", "--unet-dim-mults", "1", "--batch-size", "2",
                 "--eval-every", "0", "--steps", "1", *TINY_D_ARGS)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "d" / "config.json").read_text())["from"].endswith("default_model.pt")


def test_an_empty_run_value_is_named_as_such(source):
    result = cli("--out", source, "--resume", "--steps", "3", "--d-attn-res", "8")
    assert result.exit_code == 1 and "the run in" in result.output
    assert "has '' (none); a resumed run keeps its discriminator" in result.output, result.output
