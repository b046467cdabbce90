"""The U-Net stage follows the official recipe (issue: base = raw G, D and its Adam state continue, G's
Adam fresh), the halved hinge on every U-Net path, the NaN gradient-penalty skip, the EMA record,
best.pt's selection record and the >= 512 px refusal."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from fpa_export.models import describe, read_checkpoint
from fpa_export.training.api import train_fpa, train_unet
from fpa_export.training.cli import main
from fpa_export.training.ema import EMASchedule
from tests.conftest import tiny_config, tiny_unet_config
from tests.test_train_data import make_folder
from tests.test_train_run import TINY_D, TINY_D_ARGS, options, train_config

NO_RESET = EMASchedule(start=0, every=1, reset_until=-1)  # EMA drifts away from G: raw ≠ EMA


@pytest.fixture
def source(tmp_path):
    """A 3-step FPA run whose raw G and EMA differ; returns (data folder, latest.pt)."""
    data = str(make_folder(tmp_path / "images"))
    train_fpa(tmp_path / "fpa", tiny_config(image_size=16), train_config(ema=NO_RESET), options(data, steps=3))
    return data, tmp_path / "fpa" / "latest.pt"


def d_adam_steps(state: dict) -> set:
    return {int(v["step"]) for v in state["opt_d"]["state"].values()}


def fpa_part(state_dict: dict) -> dict:
    return {k: v for k, v in state_dict.items() if not k.startswith("unet.")}


def test_default_base_is_the_raw_generator_and_d_with_its_adam_state_continue(tmp_path, source):
    data, path = source
    src = read_checkpoint(path)
    raw = src["train_state"]["generator"]
    assert any(not torch.equal(raw[k], src["state_dict"][k]) for k in raw)  # the test can tell them apart
    train_unet(tmp_path / "u", path, tiny_unet_config(3), train_config(), options(data, steps=2))
    out = read_checkpoint(tmp_path / "u" / "latest.pt")
    for key, value in raw.items():
        assert torch.equal(out["state_dict"][key], value), key  # EMA copy's FPA = source raw G, bit-equal
        assert torch.equal(out["train_state"]["generator"][key], value), key
    assert d_adam_steps(src["train_state"]) == {3}
    assert d_adam_steps(out["train_state"]) == {5}  # D's Adam step counts continue (3 → 5)
    assert {int(v["step"]) for v in out["train_state"]["opt_g"]["state"].values()} == {2}  # G's is fresh
    config = json.loads((tmp_path / "u" / "config.json").read_text())
    assert config["base"] == "raw" and config["discriminator"].startswith("continued")


def test_base_ema_and_fresh_d(tmp_path, source):
    data, path = source
    src = read_checkpoint(path)
    train_unet(tmp_path / "u", path, tiny_unet_config(3), train_config(), options(data, steps=2),
               base="ema", fresh_d=True)
    out = read_checkpoint(tmp_path / "u" / "latest.pt")
    for key, value in src["state_dict"].items():
        assert torch.equal(out["state_dict"][key], value), key
    assert d_adam_steps(out["train_state"]) == {2}
    config = json.loads((tmp_path / "u" / "config.json").read_text())
    assert config["base"] == "ema" and config["discriminator"] == "fresh"


def test_best_pt_carries_the_raw_generator_and_the_selection_record(tmp_path, source):
    data, path = source
    best = read_checkpoint(path.parent / "best.pt")
    assert best["metrics"]["selected_by"] == {"metric": "fd_pixel", "samples": 16, "real_images": 5,
                                              "lower_is_better": True}  # the folder's 5 readable images
    assert "fd_pixel" in best["metrics"]
    train_unet(tmp_path / "u", path.parent / "best.pt", tiny_unet_config(3), train_config(),
               options(data, steps=1))  # raw G and D come from best.pt's train_state


def test_cli_unet_dim_defaults_to_the_image_size_and_d_options_need_fresh_d(tmp_path, source):
    data, path = source
    runner = CliRunner()
    common = ["unet", "--from", str(path), "--data", data, "--steps", "1", "--batch-size", "4",
              "--eval-every", "0", "--no-progress", "--unet-dim-mults", "1,2"]
    refused = runner.invoke(main, common + ["--out", str(tmp_path / "a"), "--fmap-max", "16"])
    assert refused.exit_code != 0 and "--fresh-d" in refused.output and not (tmp_path / "a").exists()
    result = runner.invoke(main, common + ["--out", str(tmp_path / "u")])
    assert result.exit_code == 0, result.output
    assert read_checkpoint(tmp_path / "u" / "latest.pt")["config"]["unet"]["dim"] == 16
    fresh = runner.invoke(main, common + ["--out", str(tmp_path / "f"), "--fresh-d", "--unet-dim", "8",
                                          *TINY_D_ARGS])
    assert fresh.exit_code == 0, fresh.output


def test_source_without_train_state_is_a_one_line_refusal(tmp_path, source):
    from fpa_export.models import load_checkpoint, save_checkpoint
    from fpa_export.training.loop import TrainingError

    data, path = source
    generator, _ = load_checkpoint(path)
    bare = save_checkpoint(tmp_path / "bare.pt", generator, step=3)
    with pytest.raises(TrainingError, match="--base ema"):
        train_unet(tmp_path / "u", bare, tiny_unet_config(3), train_config(), options(data, steps=1))
    with pytest.raises(TrainingError, match="--fresh-d"):
        train_unet(tmp_path / "u", bare, tiny_unet_config(3), train_config(), options(data, steps=1),
                   base="ema")


def test_end_to_end_unet_training_also_halves_the_hinge():
    from fpa_export.training.trainer import Trainer, TrainConfig

    with_unet = Trainer(tiny_config(image_size=16, unet=tiny_unet_config()), TrainConfig(**TINY_D))
    plain = Trainer(tiny_config(image_size=16), TrainConfig(**TINY_D))
    assert with_unet.halve_hinge and not plain.halve_hinge
    reals = torch.rand(4, 3, 16, 16)
    torch.manual_seed(1)
    halved = with_unet._d_loss(reals.clone(), apply_gp=False)
    with_unet.halve_hinge = False
    torch.manual_seed(1)
    full = with_unet._d_loss(reals.clone(), apply_gp=False)
    torch.testing.assert_close(halved["divergence"], full["divergence"] / 2)


def test_nan_gradient_penalty_is_skipped_and_counted(monkeypatch):
    from fpa_export.training import trainer as trainer_module
    from fpa_export.training.trainer import Trainer, TrainConfig

    trainer = Trainer(tiny_config(image_size=16, channels=1), TrainConfig(gp_every=1, **TINY_D))
    monkeypatch.setattr(trainer_module, "gradient_penalty", lambda *a, **k: torch.tensor(float("nan")))
    before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    stats = trainer.step([torch.rand(4, 1, 16, 16)])
    assert "gp" not in stats and stats["gp_skipped"] == 1.0 and trainer.gp_skipped == 1
    after = trainer.discriminator.state_dict()
    assert all(torch.isfinite(v).all() for v in after.values())  # D not poisoned
    assert any(not torch.equal(before[k], after[k]) for k in before)  # but it did train
    assert trainer.state()["gp_skipped"] == 1


@pytest.mark.parametrize("start, every, steps, first, advice", [
    (1, 10, 3, 10, "lower --ema-every to 2 or less, and --ema-start below it"),
    (100, 10, 50, 110, "lower --ema-start below 40"),
    (0, 1, 1, 1, "a run of 2 steps or more can average"),
])
def test_the_ema_notice_names_what_keeps_the_ema_from_averaging(start, every, steps, first, advice):
    """`--ema-start 1` with the default `--ema-every 10` in a 3-step run: the period, not the start,
    keeps the EMA from averaging, and the line says so."""
    from fpa_export.training.ema import ema_notice, ema_record

    schedule = EMASchedule(start=start, every=every, reset_every=2, reset_offset=0, reset_until=1000)
    line = ema_notice(schedule, steps)
    assert f"first update (step {first}," in line and advice in line, line
    suggested = {"lower --ema-start below 40": dict(start=39), "lower --ema-every to 2 or less, and "
                 "--ema-start below it": dict(start=1, every=2)}.get(advice)
    if suggested:  # what the line suggests does make the EMA average
        better = EMASchedule(**{**dict(start=start, every=every, reset_every=2, reset_offset=0,
                                       reset_until=1000), **suggested})
        assert ema_record(better, steps)["started"] is not None and ema_notice(better, steps) == ""


def test_ema_that_never_starts_is_announced_and_recorded(tmp_path, capsys):
    late = EMASchedule(start=100, every=10, reset_every=2, reset_offset=0, reset_until=1000)
    train_fpa(tmp_path / "r", tiny_config(image_size=16), train_config(ema=late), options(steps=3))
    err = capsys.readouterr().err
    assert "ends before the EMA's first update (step 110, the first multiple of --ema-every 10 after " \
        "--ema-start 100)" in err and "step 2" in err
    ckpt = read_checkpoint(tmp_path / "r" / "latest.pt")
    assert ckpt["ema"] == {"started": None, "last_reset": 2, "beta": 0.995}
    assert describe(ckpt).endswith("EMA: none (a copy of G at step 2)")
    train_fpa(tmp_path / "s", tiny_config(image_size=16), train_config(), options(steps=3))
    assert "ema-start" not in capsys.readouterr().err
    assert "EMA: averaging since step 2" in describe(read_checkpoint(tmp_path / "s" / "latest.pt"))


def test_discriminator_at_512_px_is_refused_in_one_line():
    from fpa_export.common.errors import FpaError
    from fpa_export.training.discriminator import Discriminator

    with pytest.raises(FpaError, match="512 px") as err:
        Discriminator(512, 3, **TINY_D)
    assert "\n" not in str(err.value)
    Discriminator(256, 1, fmap_max=8, attn_res_layers=())  # 256 is still built
