"""`ExportSpec`: the one description of an exported graph that exporters, verifiers and runtimes read.

Two graphs per checkpoint, both with a dynamic batch axis and static C, S, T from the model config:
  image: z (B, d) float32 → image (B, C, S, S): float32 in [-1, 1], or uint8 (`fpa_export.common.images.to_uint8`);
         with `rgb`, a greyscale model's one channel repeated to three (B, 3, S, S), the input that
         FID tools scoring an ONNX generator expect (torch-fidelity: Bx3xHxW)
  steps: z (B, d) float32 → updates, partials (B, T, C, S, S) float32 (docs/MODEL.md §4, for GIFs)
An fp16 graph computes its weight matrix products in float16 but keeps float32 inputs and outputs.
A description only: no torch here (the torch modules of the graphs are in `graphs`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from fpa_export.common.errors import FpaError
from fpa_export.models import FPAConfig

from .options import GRAPHS, LSTM_MODES  # noqa: E402,F401

INPUT_NAME = "z"  # the one input of every graph: latents (batch, latent_size), float32
BATCH = "batch"                  # name of the dynamic axis

Dim = Union[int, str]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str               # "float32" or "uint8"
    shape: tuple[Dim, ...]   # BATCH marks the dynamic axis

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else int(d) for d in self.shape)

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ExportSpec:
    config: FPAConfig
    graph: str = "image"        # "image" or "steps"
    fp16: bool = False          # float16 weight products (softmax, canvas, tanh stay float32)
    uint8: bool = False         # image graph only: uint8 output for FID tools
    rgb: bool = False           # image graph only: three output channels (greyscale repeated)
    lstm: str = "unrolled"      # "unrolled" (no Loop/Scan: TensorRT, CUDA graphs) or "op" (ONNX LSTM)

    def __post_init__(self):
        if self.graph not in GRAPHS:
            raise FpaError(f"graph must be one of {GRAPHS}, got {self.graph!r}")
        if self.lstm not in LSTM_MODES:
            raise FpaError(f"lstm must be one of {LSTM_MODES}, got {self.lstm!r}")
        if self.uint8 and self.graph != "image":
            raise FpaError("the uint8 option applies to the image graph only")
        if self.rgb and self.graph != "image":
            raise FpaError("the rgb option applies to the image graph only")

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec(INPUT_NAME, "float32", (BATCH, self.config.latent_size)),)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        c = self.config
        if self.graph == "image":
            shape = (BATCH, 3 if self.rgb else c.channels, c.image_size, c.image_size)
            return (TensorSpec("image", "uint8" if self.uint8 else "float32", shape),)
        shape = (BATCH, c.num_steps, c.channels, c.image_size, c.image_size)
        return TensorSpec("updates", "float32", shape), TensorSpec("partials", "float32", shape)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def sample_input(self, batch: int = 2, seed: int = 0):
        """A fixed standard-normal z (batch, d), a torch tensor, for tracing and verification."""
        import torch

        generator = torch.Generator().manual_seed(seed)
        return torch.randn(batch, self.config.latent_size, generator=generator)

    def module(self, generator):
        """The torch module whose forward is this graph (shares the generator's weights)."""
        from .graphs import ImageGraph, StepsGraph

        unrolled = self.lstm == "unrolled"
        if self.graph == "image":
            return ImageGraph(generator, self.uint8, unrolled, self.rgb)
        return StepsGraph(generator, unrolled)

    def to_dict(self) -> dict:
        return {"graph": self.graph, "fp16": self.fp16, "uint8": self.uint8, "rgb": self.rgb,
                "lstm": self.lstm,
                "config": self.config.to_dict(),
                "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, data: dict) -> "ExportSpec":
        return cls(config=FPAConfig.from_dict(data["config"]), graph=data["graph"],
                   fp16=bool(data["fp16"]), uint8=bool(data["uint8"]), lstm=data["lstm"],
                   rgb=bool(data.get("rgb", False)))  # records from before the option: False
