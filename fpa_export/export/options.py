"""The export options' names and defaults, torch-free, so `fpa-export --help` answers at once."""

GRAPHS = ("image", "steps")
LSTM_MODES = ("unrolled", "op")  # straight-line gate arithmetic, or the ONNX LSTM op
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 18
DEFAULT_MAX_BATCH = 1024  # TensorRT optimisation profile
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")  # the names a TensorRT engine is written and read as
