"""Mask-and-pattern triggers shared by NC and ABS: x' = (1 - m) * x + m * p.

Both optimise an unconstrained mask variable a (H×W) and pattern variable b (C×H×W) squashed
into (0, 1) by a tanh; they differ only in the squash ([NC] divides by 2 - eps, [ABS] by 2),
their initialisation and their losses.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from farm.methods.base import EpochProblem
from farm.methods.squash import squash


class BlendProblem(EpochProblem):
    """``variables = [a, b]``; subclasses set the squash's ``divisor`` and build the variables."""

    divisor: ClassVar[float]

    def squash(self, a: torch.Tensor) -> torch.Tensor:
        return squash(a, self.divisor)

    def current(self) -> torch.Tensor:
        """[m; p] of every pair now, (P, 1+C, H, W): the stored blend trigger layout."""
        a, b = self.variables
        return torch.cat([self.squash(a.detach()).unsqueeze(1), self.squash(b.detach())], 1)

    def stamp(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        m = self.squash(self.variables[0][rows]).unsqueeze(1).unsqueeze(1)  # A×1×1×H×W
        p = self.squash(self.variables[1][rows]).unsqueeze(1)  # A×1×C×H×W
        return (1 - m) * x + m * p
