"""The one model shape every method sees: [0,1] images in, logits out.

Methods stamp triggers in pixel space ([0,1]) and measure trigger size there, so the
dataset's normalisation must live *inside* the model. Keeping mean/std as buffers means they
travel with ``state_dict``/TorchScript and a checkpoint can never be paired with the wrong
statistics by accident.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class NormalizedModel(nn.Module):
    """``forward(x) = net((x - mean) / std)`` for x in [0,1], N×C×H×W."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std
        if z.dim() == 4:
            # oneDNN convolutions are 1.3-2× faster on channels-last input on CPU (measured,
            # docs/benchmarks); the layout does not change any value.
            z = z.contiguous(memory_format=torch.channels_last)
        out = self.net(z)
        # torchvision's GoogLeNet/Inception return a named tuple in train mode; logits first.
        return out if isinstance(out, torch.Tensor) else out[0]
