"""TensorRT runtime for engines built by `fpa-export trt` (TensorRT 10/11 name-based tensor API).

Inputs and outputs live in torch CUDA tensors; batches larger than the engine's profile maximum are
run in chunks. The engine's sidecar gives the model config and the TensorRT version that built it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from fpa_export.models import FPAConfig
from fpa_export.export.sidecar import ExportError, record_or_fail
from fpa_export.export.spec import INPUT_NAME, ExportSpec
from fpa_export.export.trt_build import import_tensorrt
from .base import Sampler


class TrtSampler(Sampler):
    """Runs one engine (an image or a steps graph) on a CUDA device."""

    parallel_batches = False  # one execution context and its buffers

    def __init__(self, path: str | Path, device: str = "cuda"):
        trt = import_tensorrt()
        self.path, self.device = Path(path), torch.device(device)
        sidecar = record_or_fail(self.path, "fpa-export trt")  # well formed: it has a spec
        built_with = sidecar["inputs"].get("tensorrt")
        if built_with and built_with.split(".")[:2] != str(trt.__version__).split(".")[:2]:
            raise ExportError(f"{self.path}: built with TensorRT {built_with}, this is "
                              f"{trt.__version__}; rebuild it with `fpa-export trt`")
        self.spec = ExportSpec.from_dict(sidecar["inputs"]["spec"])
        self.config: FPAConfig = self.spec.config
        self.name = "tensorrt"
        self._dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                        trt.DataType.UINT8: torch.uint8}
        with torch.cuda.device(self.device):  # the engine lives on the sampler's GPU
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = runtime.deserialize_cuda_engine(self.path.read_bytes())
            if self.engine is None:
                raise ExportError(f"{self.path}: TensorRT cannot load this engine (other GPU or version?)")
            self.context = self.engine.create_execution_context()
        names = {self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)}
        if names != {INPUT_NAME, *self.spec.output_names}:
            raise ExportError(f"{self.path}: engine tensors {sorted(names)} do not match its sidecar")
        low, _, high = self.engine.get_tensor_profile_shape(INPUT_NAME, 0)
        self.min_batch, self.max_batch = int(low[0]), int(high[0])

    def _run(self, z: torch.Tensor) -> list[torch.Tensor]:
        chunks = [self._run_chunk(part) for part in z.split(self.max_batch)]
        return [torch.cat(parts) for parts in zip(*chunks)]

    def _run_chunk(self, z: torch.Tensor) -> list[torch.Tensor]:
        """One batch within the profile; one below its minimum is padded with zeros and cut back."""
        count = z.shape[0]
        if count < self.min_batch:
            z = torch.cat([z, z.new_zeros(self.min_batch - count, z.shape[1])])
        with torch.cuda.device(self.device):
            return [out[:count] for out in self._execute(z.to(self.device).contiguous())]

    def _execute(self, z: torch.Tensor) -> list[torch.Tensor]:
        if not self.context.set_input_shape(INPUT_NAME, tuple(z.shape)):
            raise ExportError(f"{self.path}: TensorRT refused input shape {tuple(z.shape)} "
                              f"(profile batch {self.min_batch}..{self.max_batch})")
        self.context.set_tensor_address(INPUT_NAME, z.data_ptr())
        outputs = []
        for name in self.spec.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self._dtypes[self.engine.get_tensor_dtype(name)],
                              device=self.device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream(self.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.path}: TensorRT execution failed")
        stream.synchronize()
        return [out.cpu() for out in outputs]

    def _images(self, z: torch.Tensor) -> torch.Tensor:
        if self.spec.graph != "image":
            raise NotImplementedError(f"{self.path} is a steps engine; use .steps(z)")
        (image,) = self._run(z)
        return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()

    def _steps(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.spec.graph != "steps":
            return super()._steps(z)
        updates, partials = self._run(z)
        return updates.float(), partials.float()
