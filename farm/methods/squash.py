"""The tanh squash that maps an unconstrained variable into (0, 1), for every method that has one.

[NC] and [PB] divide by 2 - eps (never exactly 0 or 1, so the inverse stays finite), [ABS]
and CW's pattern by 2; [PB]'s size step also cools the argument by 10. One function with
those two knobs, so the methods differ only where the papers do.
"""
from __future__ import annotations

import torch

EPS = 1e-7  # tanh squashing epsilon of [PB]/[NC]
NC_DIVISOR = 2 - EPS


def squash(a: torch.Tensor, divisor: float = NC_DIVISOR, temperature: float = 1.0) -> torch.Tensor:
    """tanh(a / temperature) / divisor + 0.5."""
    return torch.tanh(a / temperature) / divisor + 0.5


def unsquash(y: torch.Tensor, divisor: float = NC_DIVISOR) -> torch.Tensor:
    """The inverse of :func:`squash` at temperature 1 (an initial value's variable)."""
    return torch.atanh((y - 0.5) * divisor)
