"""The torch modules whose forward is an exported graph (`ExportSpec.module`), sharing the generator's
weights: the image graph and the steps graph of `fpa_export.export.spec`."""
from __future__ import annotations

import torch
from torch import nn

from fpa_export.common.images import to_uint8
from fpa_export.models import FPAGenerator


class ImageGraph(nn.Module):
    """z → image (B, C, S, S): float in [-1, 1], or uint8 by the rule of `fpa_export.common.images.to_uint8`;
    `rgb` repeats a single channel three times (B, 3, S, S)."""

    def __init__(self, generator: FPAGenerator, uint8: bool = False, unrolled: bool = True,
                 rgb: bool = False):
        super().__init__()
        self.generator, self.uint8, self.unrolled, self.rgb = generator, uint8, unrolled, rgb

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        image = self.generator(z, unrolled=self.unrolled)  # (B, C, S, S)
        if self.rgb and self.generator.config.channels == 1:
            image = torch.cat([image, image, image], dim=1)  # (B, 3, S, S)
        return to_uint8(image) if self.uint8 else image


class StepsGraph(nn.Module):
    """z → (updates, partials), (B, T, C, S, S) each: the frames of a painting GIF."""

    def __init__(self, generator: FPAGenerator, unrolled: bool = True):
        super().__init__()
        self.generator, self.unrolled = generator, unrolled

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        painting = self.generator.paint(z, unrolled=self.unrolled)
        return painting.updates, painting.partials
