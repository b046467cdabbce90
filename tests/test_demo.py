"""The main job (`python -m fpa_export.demo`) end to end on the embedded default model, small n."""
from __future__ import annotations

import json

from click.testing import CliRunner
from PIL import Image

from fpa_export.models import read_checkpoint, default_checkpoint_path
from fpa_export.demo import main


def test_demo_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("FPA_EXPORT_CACHE", str(tmp_path / "cache"))
    outdir = tmp_path / "demo"
    result = CliRunner().invoke(main, ["--outdir", str(outdir), "--n", "20", "--exporter", "torchscript"])
    assert result.exit_code == 0, result.output
    config = read_checkpoint(default_checkpoint_path())["config"]
    samples = sorted((outdir / "samples").glob("*.png"))
    assert len(samples) == 20 and json.loads((outdir / "samples" / "samples.json").read_text())["n"] == 20
    sidecar = json.loads((outdir / "default-image.onnx.json").read_text())
    assert sidecar["results"]["verified"] and sidecar["results"]["verification"]["image"]["max_abs_diff"] < 1e-4
    with Image.open(outdir / "painting.gif") as gif:
        assert gif.n_frames == config["num_steps"]
    with Image.open(outdir / "painting_grid.png") as grid:
        assert grid.size[0] == 2 + config["num_steps"] * (grid.size[1] - 2) // 8  # 4 seeds × 2 rows
    assert (outdir / "samples_grid.png").exists()
    for name in ("default-image.onnx", "samples", "samples_grid.png", "painting.gif", "painting_grid.png"):
        assert str(outdir / name) in result.output
    # its own --help example after a larger run: the demo replaces its samples (fpa-sample would refuse)
    result = CliRunner().invoke(main, ["--outdir", str(outdir), "--n", "8", "--exporter", "torchscript"])
    assert result.exit_code == 0, result.output
    assert len(list((outdir / "samples").glob("*.png"))) == 8
    assert json.loads((outdir / "samples" / "samples.json").read_text())["n"] == 8


def test_demo_never_replaces_a_folder_it_did_not_write(tmp_path, monkeypatch):
    from fpa_export.demo import _earlier_larger_demo

    folder = tmp_path / "samples"
    folder.mkdir()
    assert not _earlier_larger_demo(folder, 8)  # nothing there
    (folder / "samples.json").write_text(json.dumps({"format": "fpa-samples", "n": 50,
                                                     "model": {"path": "/data/other.pt"}}))
    assert not _earlier_larger_demo(folder, 8)  # another model's samples: fpa-sample's refusal stands
    (folder / "samples.json").write_text("{not json")
    assert not _earlier_larger_demo(folder, 8)


def test_demo_replaces_its_earlier_unmarked_pictures_but_no_one_elses(tmp_path, monkeypatch):
    import numpy as np

    from fpa_export.painting.writers import made_here

    monkeypatch.setenv("FPA_EXPORT_CACHE", str(tmp_path / "cache"))
    args = ["--n", "8", "--exporter", "torchscript"]
    outdir = tmp_path / "demo"
    assert CliRunner().invoke(main, ["--outdir", str(outdir), *args]).exit_code == 0
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(outdir / "painting.gif")  # as versions before the mark
    again = CliRunner().invoke(main, ["--outdir", str(outdir), *args])
    assert again.exit_code == 0 and made_here(outdir / "painting.gif"), again.output
    other = tmp_path / "mine"
    other.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(other / "painting.gif")  # a user's file, no demo here
    before = (other / "painting.gif").read_bytes()
    refused = CliRunner().invoke(main, ["--outdir", str(other), *args])
    assert refused.exit_code == 1 and "painting.gif: exists and is not a picture" in refused.output
    assert (other / "painting.gif").read_bytes() == before and sorted(p.name for p in other.iterdir()) == [
        "painting.gif"]  # refused before any work: no graph, no samples
