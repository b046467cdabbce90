"""PyTorch runtimes: eager on CPU or CUDA, and CUDA-graph capture per batch size on CUDA.

Eager keeps `nn.LSTM` (its fused kernels are the fastest eager form on the CPU). The CUDA-graph path
runs the generator with the unrolled LSTM (`FPAGenerator(z, unrolled=True)`): a straight line of kernels
with static shapes, captured once per batch size and then replayed with a single launch.
"""
from __future__ import annotations

from collections import OrderedDict
import copy
import functools

import torch

from fpa_export.common.errors import FpaError
from fpa_export.models import FPAGenerator, fold_step_input
from .base import Sampler
from .precision import PrecisionError, torch_dtype


class TorchSampler(Sampler):
    """Eager PyTorch on `device`; with `cuda_graphs=True` (CUDA only) each batch size is captured."""

    def __init__(self, generator: FPAGenerator, device: str | torch.device = "cpu",
                 cuda_graphs: bool = False, compile: bool = False, max_graphs: int = 4,
                 precision: str = "fp32"):
        device = torch.device(device)
        _check_fp32_weights(generator)
        if cuda_graphs and device.type != "cuda":
            raise FpaError("CUDA graphs need device='cuda'")
        self.config = generator.config
        self.device = device
        self.precision = precision
        # low precision: the step input is folded into the LSTM (models.fold; fp32 keeps its exact bits)
        # and the weights are cast; FPAGenerator keeps activations, delta rule and tanh in fp32
        own = copy.deepcopy(generator) if precision == "fp32" else fold_step_input(generator)
        self.generator = own.to(device=device, dtype=torch_dtype(precision)).eval()
        unrolled = cuda_graphs or compile  # straight-line kernels capture and compile best
        forward = functools.partial(self.generator, unrolled=unrolled)
        self._forward = torch.compile(forward, dynamic=False) if compile else forward
        self._graphs: OrderedDict[int, _CapturedForward] = OrderedDict()
        self._max_graphs = max_graphs
        self.cuda_graphs = cuda_graphs
        self.parallel_batches = not (cuda_graphs or compile)  # shared graph buffers, compiling
        kind = "cuda-graph" if cuda_graphs else device.type
        self.name = f"torch-compile-{kind}" if compile else f"torch-{kind}"
        if precision != "fp32":
            self.name += f"-{precision}"

    @torch.inference_mode()
    def _images(self, z: torch.Tensor) -> torch.Tensor:
        z = z.to(self.device, non_blocking=True)
        if not self.cuda_graphs:
            return self._forward(z).float().cpu()
        return self._graph_for(z.shape[0])(z).cpu()

    @torch.inference_mode()
    def _steps(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        painting = self.generator.paint(z.to(self.device))
        return painting.updates.float().cpu(), painting.partials.float().cpu()

    def _graph_for(self, batch: int) -> "_CapturedForward":
        """The captured forward for this batch size (kept for the `max_graphs` latest sizes)."""
        if batch in self._graphs:
            self._graphs.move_to_end(batch)
        else:
            if len(self._graphs) >= self._max_graphs:
                self._graphs.popitem(last=False)
            self._graphs[batch] = _CapturedForward(self._forward, batch, self.latent_size, self.device)
        return self._graphs[batch]


def _check_fp32_weights(generator: FPAGenerator) -> None:
    """A sampler casts fp32 weights itself and is probed against fp32; weights already cast to bf16 or
    fp16 would be painted (and recorded) as something they are not: PrecisionError, one line."""
    names = {torch_dtype(name): name for name in ("bf16", "fp16")}
    low = sorted({names[p.dtype] for p in generator.parameters() if p.dtype in names})
    if low:
        raise PrecisionError(f"this generator has {torch_dtype(low[0])} weights; a sampler needs the "
                             f"fp32 generator (load_generator() without precision) and precision="
                             f"'{low[0]}', so that it can verify the result against fp32")


class _CapturedForward:
    """One CUDA graph of `forward` for a fixed batch size, with static input and output buffers."""

    def __init__(self, forward, batch: int, latent_size: int, device: torch.device, warmup: int = 3):
        self.z = torch.zeros(batch, latent_size, device=device)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):  # warm-up on a side stream, as torch.cuda.graph requires
            for _ in range(warmup):
                forward(self.z)
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out = forward(self.z)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.z.copy_(z)
        self.graph.replay()
        return self.out.float()
