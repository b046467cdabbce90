"""fpa-convert keeps what it must not replace (a training checkpoint, another file) and names tensors it
cannot convert (sparse, meta) in one line."""
from __future__ import annotations

from pathlib import Path

import torch

from fpa_export.models import read_checkpoint, save_checkpoint
from tests.conftest import make_generator
from tests.test_convert import _write, assert_one_line_error, convert, edited

ROOT = Path(__file__).resolve().parents[1]


def test_a_sparse_or_meta_tensor_is_one_line(tmp_path):
    official = edited(tmp_path)
    ckpt = torch.load(official, weights_only=True)
    weight = ckpt["GAN"]["GE.latent_to_init.weight"]
    for value, kind in ((weight.to_sparse(), "torch.sparse_coo tensor"), (weight.to("meta"), "meta tensor")):
        ckpt["GAN"]["GE.latent_to_init.weight"] = value
        torch.save(ckpt, official)
        result = convert(official, "-o", tmp_path / "o.pt", ok=False)
        assert_one_line_error(result, "GE.latent_to_init.weight is a", kind, "only dense tensors")
        assert not (tmp_path / "o.pt").exists()


def test_a_training_checkpoint_or_another_file_is_kept_unless_forced(tmp_path):
    official = edited(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    latest = save_checkpoint(run / "latest.pt", make_generator(0), step=7, train_state={"step": 7})
    other = _write(tmp_path / "other.pt", b"someone else's file")
    model = save_checkpoint(tmp_path / "mymodel.pt", make_generator(1))  # no train state, not converted
    shipped = tmp_path / "default_model.pt"
    shipped.write_bytes((ROOT / "models" / "default_model.pt").read_bytes())
    for target in (latest, other, model, shipped):
        before = target.read_bytes()
        result = convert(official, "-o", target, ok=False)
        assert_one_line_error(result, f"{target}: exists and is not a converted checkpoint",
                              "pass --force to replace it")
        assert target.read_bytes() == before
    convert(official, "-o", tmp_path / "ours.pt")
    convert(official, "-o", tmp_path / "ours.pt", "--weights", "G")  # an earlier conversion is replaced
    assert read_checkpoint(tmp_path / "ours.pt")["source"]["weights"] == "G"
    convert(official, "-o", latest, "--force")
    assert not read_checkpoint(latest).get("train_state")
