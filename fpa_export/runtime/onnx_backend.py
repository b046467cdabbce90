"""onnxruntime runtimes for exported graphs: the CPU provider, or CUDA with IO binding (and optionally a
CUDA graph per batch size) when onnxruntime-gpu is installed.

A sampler holds at most two graphs of one model: `image` (z → image) and `steps` (z → updates,
partials). The configuration comes from each graph's export record: its JSON sidecar or, without one,
the record embedded in the .onnx file (`fpa_export.export.sidecar.read_export_record`).

On the CPU, `images_array` runs numpy in and out and imports no torch (sampling an exported graph starts
without it); the tensor interface (`sampler(z)`, `steps`) and the CUDA path use torch.
"""
from __future__ import annotations

import os
from pathlib import Path
import threading
from typing import Callable, Optional

import numpy as np

from fpa_export.common.devices import device_index, device_type
from fpa_export.common.errors import FpaError, MissingExtra
from fpa_export.common.optional import require
from fpa_export.models import FPAConfig
from fpa_export.export.sidecar import ExportError, spec_from_record
from fpa_export.export.spec import INPUT_NAME, ExportSpec
from .base import Sampler

NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8}


def import_onnxruntime():
    return require("onnxruntime", "to run .onnx graphs")


def cuda_provider_available() -> bool:
    try:
        return "CUDAExecutionProvider" in import_onnxruntime().get_available_providers()
    except ImportError:
        return False


class OnnxSampler(Sampler):
    """Runs exported graphs. `image_graph`/`steps_graph`: .onnx paths, or callables returning one (so a
    graph can be exported on first use)."""

    def __init__(self, config: FPAConfig, image_graph=None, steps_graph=None, device: str = "cpu",
                 cuda_graph: bool = False, threads: int = 0):
        self.config = config
        self.device = device
        self.device_type = device_type(device)
        if self.device_type == "cuda" and not cuda_provider_available():
            raise MissingExtra("onnxruntime-gpu", "gpu", "for onnxruntime's CUDA provider",
                               "pip uninstall onnxruntime && pip install 'fpa-export[gpu]'")
        if cuda_graph and self.device_type != "cuda":
            raise FpaError("onnxruntime CUDA graphs need device='cuda'")
        self._sources = {"image": image_graph, "steps": steps_graph}
        self._graphs: dict[str, _Graph] = {}
        self._opening = threading.Lock()
        self.parallel_batches = self.device_type != "cuda"  # CUDA: one set of bound buffers per batch size
        self._cuda_graph, self._threads = cuda_graph, threads
        self.name = "onnxruntime-" + ("cuda-graph" if cuda_graph else self.device_type)

    def _graph(self, kind: str) -> "_Graph":
        with self._opening:  # painting threads may ask at once: one export, one session
            if kind not in self._graphs:
                source = self._sources[kind]
                if source is None:
                    return None
                path = source() if callable(source) else source
                graph = _Graph(Path(path), self.device, self._cuda_graph, self._threads)
                if graph.spec.graph != kind:
                    raise FpaError(f"{path} is a {graph.spec.graph} graph, expected a {kind} graph")
                self._graphs[kind] = graph
            return self._graphs[kind]

    def _images(self, z):
        import torch

        if self.device_type != "cuda":
            return torch.from_numpy(self._image_array(z.cpu().contiguous().numpy()))
        graph = self._image_graph()
        (image,) = graph.run(z)
        image = self._one_channel(graph, image)
        if image.dtype == torch.uint8:  # a uint8 graph: x/255 gives back the same bytes with to_uint8
            return image.float() / 255.0
        return image.float()

    def images_array(self, z: np.ndarray) -> np.ndarray:
        if self.device_type == "cuda":
            return super().images_array(z)
        self.check_shape(np.shape(z))
        return self._image_array(np.ascontiguousarray(z, dtype=np.float32))

    def _image_graph(self) -> "_Graph":
        graph = self._graph("image")
        if graph is None:
            raise NotImplementedError(f"{self.name}: this model has only a steps graph")
        return graph

    def _one_channel(self, graph: "_Graph", image):
        """An --rgb graph of a greyscale model repeats its one channel three times: keep one."""
        return image[:, :1] if graph.spec.rgb and self.config.channels == 1 else image

    def _image_array(self, z: np.ndarray) -> np.ndarray:
        graph = self._image_graph()
        (image,) = graph.run_array(z)
        image = self._one_channel(graph, image)
        if image.dtype == np.uint8:  # a uint8 graph: x/255 gives back the same bytes with to_uint8
            return image.astype(np.float32) / np.float32(255.0)
        return np.ascontiguousarray(image, dtype=np.float32)

    def _steps(self, z):
        graph = self._graph("steps")
        if graph is None:
            return super()._steps(z)
        updates, partials = graph.run(z)
        return updates.float(), partials.float()


class _Graph:
    """One onnxruntime session (or, with CUDA graphs, one per batch size) of one exported graph."""

    def __init__(self, path: Path, device, cuda_graph: bool, threads: int):
        self.path, self.device, self.cuda_graph = path, device, cuda_graph
        self.device_type = device_type(device)
        self.spec = spec_from_record(path)
        self.options = import_onnxruntime().SessionOptions()
        self.options.log_severity_level = 3  # no warnings about initializers the optimiser removed
        self.options.intra_op_num_threads = threads or int(os.environ.get("OMP_NUM_THREADS", 0) or 0)
        self._sessions: dict[Optional[int], object] = {}
        self._buffers: dict[int, dict] = {}
        if not cuda_graph:
            self._session(None)  # fail now, not at the first batch, on a broken file

    def _session(self, batch: Optional[int]):
        key = batch if self.cuda_graph else None
        if key not in self._sessions:
            ort = import_onnxruntime()
            if self.device_type == "cuda":
                cuda = {"device_id": device_index(self.device)}
                if self.cuda_graph and batch is not None:
                    cuda["enable_cuda_graph"] = "1"
                providers = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"]
            else:
                providers = ["CPUExecutionProvider"]
            try:
                session = ort.InferenceSession(str(self.path), self.options, providers=providers)
            except Exception as err:  # onnxruntime raises its own (non-OSError) classes for bad files
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise ExportError(f"{self.path}: onnxruntime cannot load it: {first}") from None
            check_shapes(self.path, self.spec, session)
            self._sessions[key] = session
        return self._sessions[key]

    def run_array(self, z: np.ndarray) -> list[np.ndarray]:
        """CPU: float32 numpy z → the graph's outputs as numpy arrays."""
        return self._session(None).run(self.spec.output_names, {INPUT_NAME: z})

    def run(self, z) -> list:
        """z a torch tensor → the outputs as torch tensors (CPU tensors; on CUDA through IO binding)."""
        import torch

        if self.device_type != "cuda":
            outputs = self.run_array(z.cpu().contiguous().numpy())
            return [torch.from_numpy(np.ascontiguousarray(out)) for out in outputs]
        return self._run_bound(z)

    def _run_bound(self, z) -> list:
        """CUDA: inputs and outputs stay in torch-owned device memory, bound by address (IO binding);
        the buffers are fixed per batch size, as onnxruntime's CUDA graphs require."""
        import torch

        batch = z.shape[0]
        session = self._session(batch)
        if batch not in self._buffers:
            self._buffers[batch] = {t.name: torch.empty(t.concrete_shape(batch), device=self.device,
                                                        dtype=getattr(torch, t.dtype))
                                    for t in self.spec.inputs + self.spec.outputs}
        buffers = self._buffers[batch]
        buffers[INPUT_NAME].copy_(z)
        # onnxruntime runs on its own CUDA stream: the copy (queued on torch's) must be done first
        torch.cuda.current_stream(self.device).synchronize()
        binding = session.io_binding()
        index = device_index(self.device)
        for t in self.spec.inputs + self.spec.outputs:
            bind: Callable = binding.bind_input if t.name == INPUT_NAME else binding.bind_output
            tensor = buffers[t.name]
            bind(t.name, "cuda", index, NUMPY_DTYPES[t.dtype], tuple(tensor.shape), tensor.data_ptr())
        session.run_with_iobinding(binding)
        return [buffers[name].cpu() for name in self.spec.output_names]


def check_shapes(path: Path, spec: ExportSpec, session) -> None:
    """The graph's own input/output names and fixed dimensions must be those its record claims (a
    record claiming 3 channels or another size is refused, not believed)."""
    claimed = {t.name: t.concrete_shape(1)[1:] for t in spec.inputs + spec.outputs}
    found = {arg.name: arg.shape[1:] for arg in (*session.get_inputs(), *session.get_outputs())}
    if set(found) != set(claimed):
        raise ExportError(f"{path}: the graph has tensors {sorted(found)}, its record claims "
                          f"{sorted(claimed)}; export it again")
    for name, dims in found.items():
        want = tuple(claimed[name])
        if len(dims) != len(want) or any(isinstance(d, int) and d != w for d, w in zip(dims, want)):
            raise ExportError(f"{path}: tensor {name!r} has shape (batch, {', '.join(map(str, dims))}) "
                              f"but its record claims (batch, {', '.join(map(str, want))}); export it "
                              "again")
