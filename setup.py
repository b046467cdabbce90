"""fpa-export: train, export, sample and animate Fast Weight Painters.

The version is written here once; the code reads it from the installed metadata
(`fpa_export.common.version`).
"""
from setuptools import find_namespace_packages, setup

ONNX = ["onnx>=1.16", "onnxscript>=0.2"]           # writing and checking .onnx graphs (no runtime)
TRAIN = ["scipy", "scikit-learn", "scikit-image", "mlxtend"]
setup(
    name="fpa-export",
    version="0.1.0",
    description="Train Fast Weight Painters, export them to ONNX/TensorRT, sample for FID, render GIFs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.10",
    # The repository keeps `models/` and `training/` at its top level (the design card's layout), but they
    # install inside our namespace, so a user's own `models` or `training` package never shadows ours.
    # Namespace discovery: a sub-package without an __init__.py (fpa_export.common, .convert, .fd)
    # would otherwise be missing from the wheel and the sdist while an editable install still works.
    packages=(find_namespace_packages(include=["fpa_export", "fpa_export.*"], exclude=["*.__pycache__"])
              + ["fpa_export.models"]
              + ["fpa_export.training"]),
    package_dir={"fpa_export.models": "models", "fpa_export.training": "training"},
    package_data={"fpa_export.models": ["default_model.pt"]},
    # 2.5 for the dynamo ONNX exporter; 2.6 makes torch.load(weights_only=True) safe (CVE-2025-32434).
    install_requires=["torch>=2.6", "numpy", "click>=8.1", "pillow>=9.4", "imageio>=2.28", "tqdm"],
    extras_require={
        # Exactly one onnxruntime build: [onnx] (CPU) or [gpu] (CUDA 12), never both. Installed
        # together, onnxruntime and onnxruntime-gpu shadow each other and the GPU providers vanish,
        # so no other extra pulls in a runtime.
        "onnx": ONNX + ["onnxruntime>=1.17"],
        "gpu": ONNX + ["onnxruntime-gpu>=1.17"],
        # TensorRT engines for the CUDA major of onnxruntime-gpu's PyPI builds (CUDA 12): the plain
        # `tensorrt` package resolves to a CUDA 13 build today.
        "trt": ONNX + ["tensorrt-cu12>=10"],
        # Built-in offline data sets for training and the metric tests.
        "train": TRAIN,
        "video": ["imageio-ffmpeg"],
        # Tests and tools; combine with one runtime: pip install -e '.[onnx,dev]' (what `make` does).
        "dev": ONNX + TRAIN + ["pytest"],
    },
    entry_points={"console_scripts": [
        "fpa-export=fpa_export.cli.export:main",
        "fpa-convert=fpa_export.cli.convert:main",
        "fpa-sample=fpa_export.cli.sample:main",
        "fpa-gif=fpa_export.cli.gif:main",
        "fpa-fd=fpa_export.cli.fd:main",
        "fpa-vis=fpa_export.cli.vis:main",
        "fpa-train=fpa_export.training.cli:main",
    ]},
)
