"""The FID tools users already run, against our files (docs/FID.md).

- Our random-VGG statistics cannot be mistaken for Inception statistics: no `mu`/`sigma` keys, a `kind`
  field; pytorch-fid's own `.npz` reader fails on them; old files still load; Inception statistics
  given to `fpa-fd` are one line.
- `fpa-sample` folders are what the folder readers of pytorch-fid, clean-fid and torch-fidelity expect:
  flat `NNNNNN.png` files, uint8, mode L or RGB (all three convert to RGB on load). Where a library
  imports (it needs a torchvision matching torch), its own reader is run on the folder; where it does
  not, the test skips with the import error and the contract tests below still run.
"""
from __future__ import annotations

import glob
import importlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from fpa_export.fd import metric as fd
from fpa_export.fd.frechet import COV_KEY, MEAN_KEY, STATS_KIND, StatsSet, compute_stats
from fpa_export.cli.fd import main as fd_main

N_SAMPLES = 6


def _import_or_skip(module: str):
    try:
        return importlib.import_module(module)
    except Exception as err:  # ImportError, or torchvision's `operator torchvision::nms does not exist`
        first = (str(err).strip().splitlines() or [""])[0]
        pytest.skip(f"{module} does not import here ({type(err).__name__}: {first}); see docs/FID.md")


@pytest.fixture(scope="module")
def saved_stats(tmp_path_factory):
    path = tmp_path_factory.mktemp("stats") / "ours.npz"
    stats = compute_stats([torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))],
                          seeds=(0, 1), resolution=32, source="test")
    fd.save_stats(path, stats)
    return path, stats


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory):
    """A real `fpa-sample` folder of the embedded (greyscale, 32 px) model."""
    from fpa_export.cli.sample import main as sample_main

    folder = tmp_path_factory.mktemp("samples") / "fid"
    done = CliRunner().invoke(sample_main, ["--n", str(N_SAMPLES), "--outdir", str(folder),
                                            "--backend", "torch"])
    assert done.exit_code == 0, done.output
    return folder


# --- our statistics ---------------------------------------------------------------------------------

def test_our_stats_have_their_own_keys_and_kind(saved_stats):
    path, _ = saved_stats
    with np.load(path, allow_pickle=False) as data:
        keys = set(data.files)
        assert not {"mu", "sigma"} & keys and {MEAN_KEY, COV_KEY, "kind"} <= keys
        assert str(data["kind"]) == STATS_KIND and "NOT Inception" in STATS_KIND
        assert data[MEAN_KEY].shape == (2, 736) and data[COV_KEY].shape == (2, 736, 736)
        with pytest.raises(KeyError):  # exactly what pytorch-fid's reader does with an .npz
            data["mu"][:]


def test_pytorch_fid_refuses_our_stats_with_its_own_reader(saved_stats):
    fid_score = _import_or_skip("pytorch_fid.fid_score")
    with pytest.raises(KeyError):
        fid_score.compute_statistics_of_path(str(saved_stats[0]), None, 1, 2048, "cpu")


def test_old_stats_files_with_mu_sigma_still_load(saved_stats, tmp_path):
    path, stats = saved_stats
    with np.load(path, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    old = {key: value for key, value in arrays.items() if key not in (MEAN_KEY, COV_KEY, "kind")}
    old.update(mu=arrays[MEAN_KEY], sigma=arrays[COV_KEY], format_version=np.asarray(1))
    np.savez(tmp_path / "old.npz", **old)
    back = fd.load_stats(tmp_path / "old.npz")
    assert back.seeds == [0, 1] and torch.equal(back.stats[1].sigma, stats.stats[1].sigma)
    assert fd.compare(back, stats).fd == pytest.approx(0.0, abs=1e-9)
    old.pop("sigma")
    with pytest.raises(ValueError, match="lacks mu/sigma"):
        StatsSet.from_arrays(old)


def test_inception_stats_given_to_fpa_fd_are_one_line(saved_stats, tmp_path):
    inception = tmp_path / "inception.npz"
    np.savez(inception, mu=np.zeros(2048), sigma=np.eye(2048))  # what pytorch-fid --save-stats writes
    result = CliRunner().invoke(fd_main, [str(inception), str(saved_stats[0])])
    assert result.exit_code == 1 and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "Inception FID statistics (2048-d" in last


# --- sample folders as the FID tools read them -----------------------------------------------------

def test_sample_folder_contract(sample_folder):
    """What all three readers rely on: flat image files with a listed extension, decodable by PIL,
    uint8, one mode per folder (L for greyscale models), nothing else with an image extension."""
    names = sorted(os.listdir(sample_folder))
    images = [name for name in names if name.endswith(".png")]
    assert images == [f"{i:06d}.png" for i in range(N_SAMPLES)]
    assert set(names) - set(images) <= {"samples.json"}
    assert not any(path.is_dir() for path in sample_folder.iterdir())  # flat: non-recursive globs
    for name in images:
        with Image.open(sample_folder / name) as image:
            assert image.format == "PNG" and image.mode == "L" and image.size == (32, 32)
            rgb = np.asarray(image.convert("RGB"))
        assert rgb.dtype == np.uint8 and (rgb[..., 0] == rgb[..., 1]).all()
    # pytorch-fid: path.glob('*.png'); clean-fid: glob('**/*.png', recursive=True);
    # torch-fidelity: non-recursive, extensions png,jpg,jpeg by default
    assert len(list(Path(sample_folder).glob("*.png"))) == N_SAMPLES
    assert len(glob.glob(os.path.join(sample_folder, "**/*.png"), recursive=True)) == N_SAMPLES


def test_pytorch_fid_reads_the_folder(sample_folder):
    fid_score = _import_or_skip("pytorch_fid.fid_score")
    files = sorted(file for ext in fid_score.IMAGE_EXTENSIONS for file in Path(sample_folder).glob(f"*.{ext}"))
    dataset = fid_score.ImagePathDataset(files, transforms=None)
    assert len(dataset) == N_SAMPLES and dataset[0].mode == "RGB" and dataset[0].size == (32, 32)


def test_clean_fid_reads_the_folder(sample_folder):
    utils = _import_or_skip("cleanfid.utils")
    files = sorted(file for ext in utils.EXTENSIONS
                   for file in glob.glob(os.path.join(sample_folder, f"**/*.{ext}"), recursive=True))
    dataset = utils.ResizeDataset(files, mode="clean")
    assert len(dataset) == N_SAMPLES and tuple(dataset[0].shape) == (3, 299, 299)


def test_torch_fidelity_reads_the_folder(sample_folder):
    utils = _import_or_skip("torch_fidelity.utils")
    datasets = _import_or_skip("torch_fidelity.datasets")
    files = utils.glob_samples_paths(str(sample_folder), False, "png,jpg,jpeg", verbose=False)
    image = datasets.ImagesPathDataset(files)[0]
    assert len(files) == N_SAMPLES and image.dtype == torch.uint8 and tuple(image.shape) == (3, 32, 32)
