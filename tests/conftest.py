"""Shared fixtures: tiny deterministic models and images that need no zoo training."""
from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest
import torch
from torch import nn


class TinyNet(nn.Module):
    """A small conv net without cross-sample coupling, for fast method tests."""

    def __init__(self, k: int = 4, c: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(c, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 4 * 4, k)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        h = nn.functional.adaptive_avg_pool2d(h, 4)
        return self.fc(h.flatten(1))


@pytest.fixture
def tiny_model() -> nn.Module:
    return TinyNet().double().eval().requires_grad_(False)


def tiny_images(p: int, n: int, hw: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand((p, n, 3, hw, hw), generator=g, dtype=torch.float64)
