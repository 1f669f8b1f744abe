"""Inverted dropout that draws its mask from uniform numbers on the CPU.

``nn.Dropout`` fills its mask with ``bernoulli_``, which on the CPU draws element by
element: forward and backward of one [256 x 7 x 512] activation took 10 ms against 3.7 ms
with the mask below, and the transformers apply dropout eight times a step. On other
devices ``F.dropout`` is already a fused kernel and is used as it is.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        # The mask is built outside autograd (it needs no gradient) and already carries the
        # 1 / (1 - p) rescaling, so the graph holds one multiplication.
        mask = torch.rand_like(x).ge_(self.p).mul_(1.0 / (1.0 - self.p))
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
