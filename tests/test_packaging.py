"""Packaging a user can trust: what setup.py declares, what the sdist carries, and that our packages are
never shadowed by a user's own `models/` or `training/` (issues 13 and 14).

The setup.py checks read the arguments setup.py passes to setuptools (run with `setup` replaced), so
they test the source of truth rather than an installed copy that may be stale.
"""
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from fpa_export.common.version import PACKAGE_VERSION

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "setup.py"
# The setup.py checks need the source packages beside setup.py; they are absent where an installed
# sdist is tested with its sources moved aside (so that the tests import the installed copy).
needs_setup = pytest.mark.skipif(not (SETUP.is_file() and (ROOT / "fpa_export").is_dir()),
                                 reason="needs a source tree (setup.py and the packages beside it)")


@pytest.fixture(scope="module")
def setup_kwargs():
    """The keyword arguments setup.py gives to setuptools.setup()."""
    setuptools = pytest.importorskip("setuptools")
    captured = {}
    original, cwd = setuptools.setup, os.getcwd()
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        os.chdir(ROOT)                     # setup.py reads README.md relative to its folder
        runpy.run_path(str(SETUP), run_name="__main__")
    finally:
        setuptools.setup = original
        os.chdir(cwd)
    return captured


def _names(requirements) -> set[str]:
    """'onnxruntime-gpu>=1.17' → 'onnxruntime-gpu' (lower case)."""
    import re

    return {re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower() for req in requirements}


@needs_setup
def test_every_source_package_is_declared(setup_kwargs):
    """A folder of .py files under fpa_export/ missing from `packages` is absent from the wheel and the
    sdist, while an editable install hides the loss (fpa_export.common had no __init__.py)."""
    packages = set(setup_kwargs["packages"])
    expected = {".".join(path.relative_to(ROOT).parts) for path in (ROOT / "fpa_export").rglob("*")
                if path.is_dir() and path.name != "__pycache__" and any(path.glob("*.py"))}
    assert expected | {"fpa_export"} <= packages, sorted(expected - packages)
    assert not [name for name in packages if "__pycache__" in name]
    assert setup_kwargs["package_dir"] == {"fpa_export.models": "models", "fpa_export.training": "training"}
    assert {"fpa_export.models", "fpa_export.training"} <= packages
    assert not {"models", "training"} & packages          # nothing under a generic top-level name
    assert "default_model.pt" in setup_kwargs["package_data"]["fpa_export.models"]


@needs_setup
def test_requirements_and_extras(setup_kwargs):
    assert "torch>=2.6" in setup_kwargs["install_requires"]    # safe weights_only loading
    extras = {name: _names(reqs) for name, reqs in setup_kwargs["extras_require"].items()}
    # onnxruntime and onnxruntime-gpu shadow each other: exactly one extra each, never the same one,
    # so `[gpu,dev]`, `[gpu,train]`, `[gpu,trt]` … install a single runtime.
    assert [name for name, reqs in extras.items() if "onnxruntime" in reqs] == ["onnx"]
    assert [name for name, reqs in extras.items() if "onnxruntime-gpu" in reqs] == ["gpu"]
    # TensorRT for the CUDA major of onnxruntime-gpu's PyPI builds (12), not the plain `tensorrt`
    # (which resolves to a CUDA 13 build).
    assert "tensorrt-cu12" in extras["trt"] and "tensorrt" not in extras["trt"]
    assert "pytest" in extras["dev"]


@needs_setup
def test_version_is_written_once(setup_kwargs):
    if PACKAGE_VERSION == "0+unknown":
        pytest.skip("fpa-export is not installed")
    assert setup_kwargs["version"] == PACKAGE_VERSION
    stray = [path for folder in ("fpa_export", "models", "training") for path in (ROOT / folder).rglob("*.py")
             if f'"{PACKAGE_VERSION}"' in path.read_text(encoding="utf-8")]
    assert not stray, f"version string written again in {stray}"


@needs_setup
def test_sdist_carries_what_the_tests_and_docs_need(tmp_path):
    """The sdist's file list (setuptools' own SOURCES.txt, MANIFEST.in applied) holds every test file,
    the test configuration, docs, tools, constraints, the licence and the default model."""
    pytest.importorskip("setuptools")
    result = subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    sources = set((tmp_path / "fpa_export.egg-info" / "SOURCES.txt").read_text().split())
    needed = {"LICENSE", "README.md", "constraints.txt", "pytest.ini", "Makefile", "setup.py",
              "models/default_model.pt", "tests/conftest.py", "tests/official_builders.py"}
    for folder, patterns in {"tests": ["*.py"], "docs": ["*.md", "images/*"], "tools": ["*"],
                             "models": ["*.py"], "training": ["*.py"], "fpa_export": ["**/*.py"]}.items():
        for pattern in patterns:
            needed |= {path.relative_to(ROOT).as_posix() for path in (ROOT / folder).glob(pattern)
                       if path.is_file() and "__pycache__" not in path.parts}
    assert not needed - sources, sorted(needed - sources)


def _shadowing_folder(tmp_path: Path) -> Path:
    """A project folder with its own `models` and `training` packages, which must never be imported."""
    for name in ("models", "training"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name} was imported')\n")
    return tmp_path


def _run(args, cwd):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_import_is_not_shadowed_by_a_users_models_package(tmp_path):
    cwd = _shadowing_folder(tmp_path)
    code = ("import fpa_export, fpa_export.models, fpa_export.training.cli; "
            "print(fpa_export.__version__, fpa_export.models.FPAConfig.__module__)")
    result = _run([sys.executable, "-c", code], cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == [PACKAGE_VERSION, "fpa_export.models.config"]


def test_console_scripts_are_not_shadowed_by_a_users_models_package(tmp_path):
    cwd = _shadowing_folder(tmp_path)
    result = _run([sys.executable, "-m", "fpa_export.cli.sample", "--version"], cwd)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"fpa-sample {PACKAGE_VERSION}"
    script = Path(sys.executable).parent / "fpa-sample"
    if script.is_file():                                # the installed entry point, where there is one
        result = _run([str(script), "--version"], cwd)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.strip() == f"fpa-sample {PACKAGE_VERSION}"
