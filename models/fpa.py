"""The Fast Weight Painter generator (docs/MODEL.md §1–3, §5): z → LSTM → keys, values, lrs → delta
rule.

An LSTM emits, per painting step, a key, a value and a learning rate for each channel; the delta rule
(`models.delta`) turns them into one rank-1 update of the channel's S×S canvas per step. The image is
tanh(W_T), or with a U-Net refinement tanh(U(tanh(W_T))) (not residual: U's output replaces the image).

Precision: the LSTM and the projections (and the U-Net) run in the dtype of the weights, so a copy cast
with `.to(torch.bfloat16)` paints in bf16; the key/value/lr activations, the delta rule and the final
tanh then run in fp32 (no cast happens for fp32 or fp64 weights, leaving those paths unchanged).
"""
from __future__ import annotations

from dataclasses import dataclass
import math

import torch
from torch import nn

from .config import FPAConfig
from .delta import canvas_from_writes, delta_rule_writes, partial_sums, rank_one_updates
from .lstm import unrolled_lstm

LOW_PRECISION = (torch.bfloat16, torch.float16)  # weight dtypes whose painting is done in fp32


@dataclass
class Painting:
    """Everything `FPAGenerator.paint` records for one batch."""
    image: torch.Tensor     # (B, C, S, S) final image (after tanh, and the U-Net if any)
    canvas: torch.Tensor    # (B, C, S, S) W_T before any activation
    updates: torch.Tensor   # (B, T, C, S, S) rank-1 updates x_t = u_t k_tᵀ
    partials: torch.Tensor  # (B, T, C, S, S) partial sums W_t = x_1 + … + x_t


class FPAGenerator(nn.Module):
    """The painter. `forward(z)` maps z (B, latent_size) to images (B, C, S, S) in [-1, 1]."""

    def __init__(self, config: FPAConfig, initialise: bool = True):
        """`initialise=False` skips the official initialisation (for weights about to be loaded)."""
        super().__init__()
        self.config = config
        c = config
        if c.input_generator == "v2":
            self.input_generator = nn.Linear(c.latent_size, c.mini_latent_size * c.num_steps)
            self.step_input = nn.Linear(c.mini_latent_size, c.input_size)
        if c.input_generator == "v1" or c.latent_to_init:
            self.latent_to_init = nn.Linear(c.latent_size, 2 * c.num_layers * c.hidden_size)
        if c.step_embedding:
            self.step_embedding = nn.Parameter(torch.empty(c.num_steps, c.lstm_input_size))
        self.lstm = nn.LSTM(c.lstm_input_size, c.hidden_size, c.num_layers, batch_first=True)
        if c.wide_out_dim:
            self.wide = nn.Sequential(nn.Linear(c.hidden_size, c.wide_out_dim), nn.ReLU())
        self.kvb = nn.Linear(c.wide_out_dim or c.hidden_size, c.kvb_size)
        if c.unet is not None:
            from .unet import UNet
            self.unet = UNet(c.unet)
        if initialise:
            self.reset_parameters()

    @property
    def latent_size(self) -> int:
        return self.config.latent_size

    def reset_parameters(self) -> None:
        """The official initialisation (docs/MODEL.md §3); what is not listed keeps PyTorch's default."""
        c = self.config
        bound = 1.0 / math.sqrt(c.hidden_size)
        for param in self.lstm.parameters():
            nn.init.uniform_(param, -bound, bound)
        bound = 1.0 / math.sqrt(c.channels * (2 * c.image_size + 1))
        nn.init.uniform_(self.kvb.weight, -bound, bound)
        nn.init.uniform_(self.kvb.bias, -bound, bound)
        fan_in_layer = self.step_input if c.input_generator == "v2" else self.latent_to_init
        nn.init.kaiming_normal_(fan_in_layer.weight, mode="fan_in", nonlinearity="relu")
        if c.step_embedding:
            nn.init.normal_(self.step_embedding)

    # -- the LSTM that emits the painting instructions ------------------------------------------
    def _lstm_inputs(self, z: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.input_generator == "v2":
            x = self.input_generator(z)  # (B, m·T)
            if c.input_tanh:
                x = torch.tanh(x)
            x = self.step_input(x.reshape(-1, c.num_steps, c.mini_latent_size))  # (B, T, e)
        else:
            x = z.unsqueeze(1).expand(-1, c.num_steps, -1)  # (B, T, d): z at every step
        if c.step_embedding:
            x = x + self.step_embedding  # (B, T, input)
        return x

    def _initial_state(self, z: torch.Tensor):
        c = self.config
        if not hasattr(self, "latent_to_init"):
            return None
        h0, c0 = self.latent_to_init(z).chunk(2, dim=1)  # (B, L·H) each, h first
        shape = (-1, c.num_layers, c.hidden_size)
        return (h0.reshape(shape).transpose(0, 1).contiguous(),  # (L, B, H)
                c0.reshape(shape).transpose(0, 1).contiguous())

    def painting_instructions(self, z: torch.Tensor, unrolled: bool = False):
        """keys, values (B·C, T, S) and learning rates (B·C, T, r), activations applied.

        `unrolled=True` runs the LSTM as straight-line gate arithmetic (same weights, same result):
        the form exported graphs, CUDA graphs and torch.compile want."""
        c = self.config
        low = self.kvb.weight.dtype
        if low in LOW_PRECISION and z.dtype != low:
            z = z.to(low)  # low-precision weights: the LSTM and projections run in their dtype
        x, state = self._lstm_inputs(z), self._initial_state(z)
        if unrolled:
            hidden = unrolled_lstm(self.lstm, x, state)  # (B, T, H)
        else:
            hidden = self.lstm(x, state)[0]  # (B, T, H)
            if low in LOW_PRECISION:
                # batch_first hands back a (T, B, H) buffer seen as (B, T, H). On that view, with
                # weights that do not require grad (load_generator's default), torch's matmul copies
                # the weight once per image for a batched product, which in bf16 costs a quarter of a
                # paper-size batch (one thread, 2-core EPYC: 337 -> 251 ms for 64 images). Laid out
                # first, it is one matrix product whatever requires_grad says. fp32 is left as it is:
                # there both forms run alike and it keeps its exact bits.
                hidden = hidden.contiguous()
        if c.wide_out_dim:
            hidden = self.wide(hidden)  # (B, T, D')
        raw = self.kvb(hidden)  # (B, T, C·(2S + r)): keys | values | lrs, channel-major blocks
        if raw.dtype in LOW_PRECISION:
            raw = raw.float()  # activations and the delta rule stay fp32 with bf16/fp16 weights
        size, channels = c.image_size, c.channels
        raw_keys, raw_values, raw_lrs = raw.split(
            [channels * size, channels * size, channels * c.lr_size], dim=2)

        def per_channel(t: torch.Tensor, width: int) -> torch.Tensor:
            t = t.reshape(-1, c.num_steps, channels, width)  # (B, T, C, width)
            return t.transpose(1, 2).reshape(-1, c.num_steps, width)  # (B·C, T, width)

        keys = per_channel(raw_keys, size)
        values = per_channel(raw_values, size)
        lrs = per_channel(raw_lrs, c.lr_size)
        if c.key_softmax:
            keys = torch.softmax(keys, dim=-1)
        if c.value_tanh:
            values = torch.tanh(values)
        if c.lr_sigmoid:
            lrs = torch.sigmoid(lrs)
        return keys, values, lrs

    # -- from canvas to image -------------------------------------------------------------------
    def finish(self, canvas: torch.Tensor) -> torch.Tensor:
        """W_T (B, C, S, S) → image. Without a U-Net: tanh(W_T). With one, as the official code:
        tanh(U(tanh(W_T))), each tanh switchable (`unet.pre_tanh`, `out_tanh`). Never inside the loop."""
        c = self.config
        image = canvas
        if c.unet is not None:
            image = torch.tanh(image) if c.unet.pre_tanh else image
            low = next(self.unet.parameters()).dtype
            if low in LOW_PRECISION:
                image = self.unet(image.to(low)).float()  # the final tanh stays fp32
            else:
                image = self.unet(image)
        return torch.tanh(image) if c.out_tanh else image

    def paint(self, z: torch.Tensor, unrolled: bool = False) -> Painting:
        """The final image plus every step's rank-1 update and partial sum (for GIFs and grids)."""
        c = self.config
        keys, values, lrs = self.painting_instructions(z, unrolled)
        writes = delta_rule_writes(keys, values, lrs)  # (B·C, T, S)
        frame_shape = (-1, c.channels, c.num_steps, c.image_size, c.image_size)
        updates = rank_one_updates(writes, keys)  # (B·C, T, S, S)
        partials = partial_sums(updates)
        canvas = canvas_from_writes(writes, keys).reshape(-1, c.channels, c.image_size, c.image_size)
        return Painting(
            image=self.finish(canvas),
            canvas=canvas,
            updates=updates.reshape(frame_shape).transpose(1, 2),  # (B, T, C, S, S)
            partials=partials.reshape(frame_shape).transpose(1, 2),
        )

    def canvas(self, z: torch.Tensor, unrolled: bool = False) -> torch.Tensor:
        """W_T (B, C, S, S): the finished canvas before any activation or U-Net."""
        c = self.config
        keys, values, lrs = self.painting_instructions(z, unrolled)
        canvas = canvas_from_writes(delta_rule_writes(keys, values, lrs), keys)  # (B·C, S, S)
        return canvas.reshape(-1, c.channels, c.image_size, c.image_size)

    def forward(self, z: torch.Tensor, unrolled: bool = False) -> torch.Tensor:
        return self.finish(self.canvas(z, unrolled))
