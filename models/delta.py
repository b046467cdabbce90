"""The delta learning rule that paints an FPA image (docs/MODEL.md §1) — written once, used everywhere.

Each channel's canvas is an S×S matrix W built from T rank-1 updates. With keys k_t, values v_t and
learning rates beta_t (shape (S,) or (1,)):

    step 1:    u_1 = v_1                                   (no learning rate, nothing retrieved)
    step t>1:  u_t = beta_t ⊙ (v_t − W_{t−1} k_t),   W_t = W_{t−1} + u_t k_tᵀ

so that pixel (i, j) = Σ_t u_t[i] k_t[j]: rows are indexed by the value, columns by the key.

We never materialise W inside the loop. Since W_{t−1} k_t = Σ_{s<t} u_s (k_s · k_t), the retrieval only
needs the T×T Gram matrix of the keys and the previous write vectors u_s; the canvas is then one matrix
product Uᵀ K. This is the same arithmetic as the official loop of S×S updates, reordered: it touches
O(T·S) numbers per step instead of O(S²), and it is a straight line of ops for a fixed T (no data-
dependent branches), so it exports to ONNX/TensorRT unchanged.
"""
from __future__ import annotations

import sys

import torch


def delta_rule_writes(keys: torch.Tensor, values: torch.Tensor, lrs: torch.Tensor) -> torch.Tensor:
    """Write vectors u_t of the delta rule.

    keys, values: (N, T, S) — N is any flattened batch (batch × channels).
    lrs: (N, T, r) with r = 1 or S, already squashed (sigmoid); lrs[:, 0] is ignored (step 1).
    Returns U: (N, T, S) with U[:, t] = u_t.

    Sampling (eager, under `torch.inference_mode`, as every sampler runs) fills one preallocated
    (N, T, S) buffer in place: the same products on the same numbers, without re-copying the t earlier
    writes at every step (8 % of a bf16 forward of the paper-size model, 2-core CPU). Everything else
    (training, a user's `no_grad` code, exports, compiled graphs, vmap) keeps the functional form
    (`torch.cat`).
    """
    num_steps = keys.shape[1]
    gram = torch.bmm(keys, keys.transpose(1, 2))  # (N, T, T): gram[n, t, s] = k_t · k_s
    if _eager_inference():
        writes = torch.empty_like(values)
        writes[:, :1] = values[:, :1]  # step 1 writes the value itself
        for t in range(1, num_steps):
            retrieved = torch.bmm(gram[:, t:t + 1, :t], writes[:, :t])  # W_{t-1} k_t, (N, 1, S)
            torch.mul(lrs[:, t:t + 1], values[:, t:t + 1] - retrieved, out=writes[:, t:t + 1])
        return writes
    writes = values[:, :1]  # (N, 1, S): step 1 writes the value itself
    for t in range(1, num_steps):
        # W_{t-1} k_t = Σ_{s<t} (k_t · k_s) u_s
        retrieved = torch.bmm(gram[:, t:t + 1, :t], writes)  # (N, 1, S)
        write = lrs[:, t:t + 1] * (values[:, t:t + 1] - retrieved)  # (N, 1, S)
        writes = torch.cat([writes, write], dim=1)  # (N, t+1, S)
    return writes


def _eager_inference() -> bool:
    """True when in-place writes are safe and seen by nobody: inference mode (as every sampler runs),
    no tracer, compiler, exporter or functorch transform (vmap, jvp)."""
    if not torch.is_inference_mode_enabled():
        return False
    transforms = getattr(torch._C, "_are_functorch_transforms_active", None)
    onnx = sys.modules.get("torch.onnx")  # not imported: no ONNX export (and sampling never imports it)
    return not ((transforms is not None and transforms()) or torch.jit.is_tracing()
                or torch.jit.is_scripting() or torch.compiler.is_compiling()
                or torch.compiler.is_exporting() or (onnx is not None and onnx.is_in_onnx_export()))


def canvas_from_writes(writes: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """W_T = Σ_t u_t k_tᵀ as one product: (N, T, S) × (N, T, S) → (N, S, S), rows = values."""
    return torch.bmm(writes.transpose(1, 2), keys)


def rank_one_updates(writes: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """Every step's update x_t = u_t k_tᵀ: (N, T, S) × (N, T, S) → (N, T, S, S)."""
    return writes.unsqueeze(3) * keys.unsqueeze(2)


def partial_sums(updates: torch.Tensor) -> torch.Tensor:
    """W_t = x_1 + … + x_t for every t: (N, T, S, S) → (N, T, S, S)."""
    return torch.cumsum(updates, dim=1)


def delta_rule(keys: torch.Tensor, values: torch.Tensor, lrs: torch.Tensor) -> torch.Tensor:
    """The final pre-activation canvas W_T (N, S, S) for keys/values (N, T, S) and lrs (N, T, r)."""
    return canvas_from_writes(delta_rule_writes(keys, values, lrs), keys)
