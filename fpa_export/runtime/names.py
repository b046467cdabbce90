"""Names the command lines need before anything heavy is imported (no torch here): `--help` is instant."""
BACKENDS = ("auto", "torch", "onnx", "trt")
PURPOSES = ("images", "steps")
PRECISIONS = ("fp32", "bf16", "fp16")
SAMPLE_FORMATS = ("png", "jpg")  # sample-folder files (fpa_export.sampling.imagefiles)
