"""`fpa-fd` and its Python API: sources, saved statistics, JSON output, errors, and a real subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from fpa_export.common.errors import FpaError
from fpa_export.fd import metric as fd
from fpa_export.cli.fd import main
from fpa_export.models import save_checkpoint
from fpa_export.common.images import to_hwc_array, to_uint8
from tests.conftest import make_generator

ROOT = Path(__file__).resolve().parents[1]


def write_folder(folder: Path, images: torch.Tensor) -> Path:
    """Save (N, C, H, W) images in [0, 1] as PNG files, as a user's data set would be."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(to_uint8(images)):
        Image.fromarray(to_hwc_array(image)).save(folder / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fd")
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(24, 3, 40, 40, generator=g), 5, 1, 2)
    return (write_folder(root / "a", smooth),
            write_folder(root / "b", torch.rand(20, 1, 36, 36, generator=g)))


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_json_output_has_the_checked_fields(folders):
    a, b = folders
    result = invoke(a, b, "--seeds", "0,2", "--size", "32", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert {"fd", "fd_std", "n_a", "n_b", "extractor", "seeds"} <= set(record)
    assert (record["n_a"], record["n_b"], record["seeds"], record["resolution"]) == (24, 20, [0, 2], 32)
    assert (record["a"], record["b"]) == (str(a), str(b))  # a saved line says what it compared
    per_seed = list(record["fd_per_seed"].values())
    assert record["fd"] == pytest.approx(np.mean(per_seed)) and record["fd"] > 0
    assert record["fd_std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert record["comparable_with_published_fid"] is False


def test_text_output_states_how_to_compare(folders):
    result = invoke(*folders, "--seeds", "0-1", "--size", "32")
    assert result.exit_code == 0, result.output
    for fragment in ("ranvgg19-w16", "seeds 0,1", "32 px", "N_a = 24", "N_b = 20", "NOT comparable"):
        assert fragment in result.output


def test_saved_statistics_reproduce_the_folder_result(folders, tmp_path):
    a, b = folders
    saved = tmp_path / "a.npz"
    only = invoke(a, "--save-stats", saved, "--seeds", "0,1", "--size", "32", "--json")
    assert only.exit_code == 0, only.output
    assert json.loads(only.output)["n_a"] == 24 and json.loads(only.output)["a"] == str(a)
    direct = json.loads(invoke(a, b, "--seeds", "0,1", "--size", "32", "--json").output)
    from_npz = json.loads(invoke(saved, b, "--json").output)   # seeds and size come from the file
    assert from_npz["fd_per_seed"] == direct["fd_per_seed"]
    assert fd.load_stats(saved).extractor_ids[1].startswith("ranvgg19-w16")


def test_model_scores_exactly_like_a_folder_of_its_saved_samples(tmp_path):
    checkpoint = save_checkpoint(tmp_path / "m.pt", make_generator(seed=1, channels=1))
    sampler = fd.open_sampler(fd.classify(str(checkpoint)))
    samples = torch.cat(list(fd.model_batches(sampler, 30, sample_seed=4, batch_size=7)))
    folder = write_folder(tmp_path / "samples", samples)
    from_model = fd.stats_of(fd.classify(str(checkpoint)), [0], 32, n=30, sample_seed=4)
    from_files = fd.stats_of(fd.classify(str(folder)), [0], 32)
    assert from_model.n == from_files.n == 30
    assert torch.equal(from_model.stats[0].mu, from_files.stats[0].mu)
    assert fd.compare(from_model, from_files).fd < 1e-9


def test_save_stats_is_written_only_when_the_comparison_succeeds(folders, tmp_path):
    a, b = folders
    saved = tmp_path / "ref.npz"
    assert invoke(b, "--save-stats", saved, "--seeds", "0", "--size", "32").exit_code == 0
    before = saved.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    other_seed = tmp_path / "seed0.npz"
    other_seed.write_bytes(before)
    for other, message in ((empty, "no images found"), (other_seed, "no statistics for seed(s) [1]")):
        result = invoke(a, other, "--save-stats", saved, "--seeds", "1", "--size", "32")
        assert result.exit_code == 1 and message in result.output, result.output
        assert saved.read_bytes() == before  # B's failure, found after A's features, leaves the file
    assert invoke(a, b, "--save-stats", saved, "--seeds", "1", "--size", "32").exit_code == 0
    assert saved.read_bytes() != before


def test_json_says_how_each_model_source_was_sampled(folders):
    a, _ = folders
    record = json.loads(invoke(a, "default", "--n", "6", "--sample-seed", "5", "--seeds", "0",
                               "--size", "32", "--json").output)
    assert record["source_a"] == f"folder {a}"
    assert record["source_b"] == "model default, 6 samples, sample seed 5, fp32, torch-cpu"


@pytest.mark.parametrize("args, message", [
    (["missing_dir", "missing_dir2"], "no such file"),
    (["{a}", "{b}", "--seeds", "x"], "--seeds"),
    (["{a}", "{inception}"], "not fpa-fd statistics"),
    (["{a}"], "--save-stats"),
    (["{a}", "{b}", "--size", "8"], "8"),
])
def test_mistakes_are_one_line_errors(folders, tmp_path, args, message):
    inception = tmp_path / "inception.npz"
    np.savez(inception, mu=np.zeros(2048), sigma=np.eye(2048))
    names = {"a": folders[0], "b": folders[1], "inception": inception}
    result = invoke(*[arg.format(**names) for arg in args])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert message in result.output, result.output


def test_console_script_in_a_subprocess_matches_in_process(folders):
    a, b = folders
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "fpa_export.cli.fd", str(a), str(b), "--seeds", "1",
                          "--size", "32", "--json"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=120, check=True).stdout
    here = json.loads(invoke(a, b, "--seeds", "1", "--size", "32", "--json").output)
    assert json.loads(out)["fd_per_seed"] == here["fd_per_seed"]


def test_parse_seeds_lists_seeds_as_every_command_does():
    assert fd.parse_seeds("3") == [3] and fd.parse_seeds("0") == [0]
    assert fd.parse_seeds("0-2") == [0, 1, 2] and fd.parse_seeds("4,1") == [4, 1]
    assert fd.parse_seeds("5,") == [5] and fd.parse_seeds("1,5-6") == [1, 5, 6]
    for text in ("0,,1", ",1", " , "):  # a seed left out between commas is a typo, not nothing
        with pytest.raises(FpaError, match="an empty item between commas"):
            fd.parse_seeds(text)
    for bad in ("-1,2", "1,1", "0-1,1", "a", "3-1", ""):
        with pytest.raises(ValueError):
            fd.parse_seeds(bad)


def test_seed_zero_and_the_default_seeds(folders):
    a, b = folders
    one = json.loads(invoke(a, b, "--seeds", "0", "--size", "32", "--json").output)
    assert one["seeds"] == [0] and one["fd_std"] == 0.0
    default = json.loads(invoke(a, b, "--size", "32", "--json").output)
    assert default["seeds"] == [0, 1, 2]
    assert default["fd_per_seed"]["0"] == one["fd_per_seed"]["0"]


def test_exported_graph_without_sidecar_and_garbage_graph(folders, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from fpa_export.export import export_onnx

    checkpoint = save_checkpoint(tmp_path / "m.pt", make_generator(seed=2, channels=1))
    graph = export_onnx(checkpoint, tmp_path / "m.onnx", exporter="torchscript")
    graph.sidecar.unlink()  # the record inside the graph is enough
    result = invoke(folders[1], graph.path, "--n", "8", "--seeds", "0", "--size", "32", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n_b"] == 8
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(os.urandom(3000))
    result = invoke(folders[1], junk, "--seeds", "0")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("Error: ") and "not an fpa-export file" in result.output


def test_model_and_the_fpa_sample_folder_of_the_same_seed_score_the_same(tmp_path):
    """The one seed rule: `fpa-fd MODEL --sample-seed S --n N` sees exactly the images that
    `fpa-sample MODEL --seed S --n N` writes, so the two give identical statistics."""
    from fpa_export.sampling import SampleRun, sample_folder

    checkpoint = save_checkpoint(tmp_path / "m.pt", make_generator(seed=2, channels=1))
    sample_folder(SampleRun(tmp_path / "s", n=24, seed=5, batch_size=5), str(checkpoint), backend="torch",
                  progress=False)
    from_model = fd.stats_of(fd.classify(str(checkpoint)), [0], 32, n=24, sample_seed=5, batch_size=5)
    from_files = fd.stats_of(fd.classify(str(tmp_path / "s")), [0], 32, batch_size=5)
    assert from_model.n == from_files.n == 24
    assert torch.equal(from_model.stats[0].mu, from_files.stats[0].mu)
    other_seed = fd.stats_of(fd.classify(str(checkpoint)), [0], 32, n=24, sample_seed=6)
    assert not torch.equal(other_seed.stats[0].mu, from_files.stats[0].mu)


def test_a_size_whose_features_cannot_fit_is_one_line_before_the_features(tmp_path):
    from click.testing import CliRunner

    from fpa_export.cli.fd import main
    from fpa_export.fd.frechet import check_feature_memory

    check_feature_memory(256, 100)  # the largest default-batch size that fits: fine
    result = CliRunner().invoke(main, ["default", "default", "--n", "2", "--size", "100000"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "lower --size or --batch-size" in result.output.strip().splitlines()[-1]


def test_default_size_of_folders_follows_their_images(tmp_path):
    """Without --size, a folder of a 32-px model's samples is compared at 32 px, as the model itself
    is: `fpa-fd real/ samples/` and `fpa-fd real/ model.pt` give the same number. Folders of larger
    photos stay at 64 px; a model decides over a folder."""
    checkpoint = save_checkpoint(tmp_path / "m.pt", make_generator(seed=3, channels=1))
    sampler = fd.open_sampler(fd.classify(str(checkpoint)))
    samples = write_folder(tmp_path / "samples", torch.cat(list(fd.model_batches(sampler, 20, 0, 10))))
    g = torch.Generator().manual_seed(1)
    real = write_folder(tmp_path / "real", torch.rand(12, 3, 80, 96, generator=g))

    def record(*args):
        result = invoke(*args, "--seeds", "0", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    via_folder, via_model = record(real, samples), record(real, checkpoint, "--n", "20")
    assert via_folder["resolution"] == via_model["resolution"] == 32
    assert via_folder["fd"] == pytest.approx(via_model["fd"], rel=1e-6)
    assert record(real, real)["resolution"] == 64
    assert fd.folder_image_size(tmp_path / "real") == 80 and fd.folder_image_size(tmp_path) == 80
    (tmp_path / "empty").mkdir()
    assert fd.folder_image_size(tmp_path / "empty") is None


def test_unreadable_folder_files_are_counted_not_hidden(folders, tmp_path, capsys):
    mixed = write_folder(tmp_path / "mixed", torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    (mixed / "bad.png").write_text("not a picture")
    (mixed / "cut.png").write_bytes((mixed / "000.png").read_bytes()[:60])
    stats = fd.stats_of(fd.classify(str(mixed)), [0], 32)
    assert stats.n == 3
    assert f"note: {mixed}: 2 unreadable file(s) of 5 skipped" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "b.png").write_text("x")
    with pytest.raises(FpaError, match=r"junk: 0 readable image\(s\) of 1 image file\(s\)"):
        fd.stats_of(fd.classify(str(tmp_path / "junk")), [0], 32)


def test_model_options_are_refused_when_no_source_is_a_model(folders):
    a, b = folders
    for args in (["--n", "50"], ["--sample-seed", "3"], ["--precision", "bf16"], ["--backend", "onnx"]):
        result = invoke(a, b, "--seeds", "0", *args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert f"{args[0]} applies only when A or B is a model" in result.output
    assert invoke(a, "default", "--seeds", "0", "--n", "4", "--size", "32").exit_code == 0
