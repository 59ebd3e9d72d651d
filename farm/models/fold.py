"""Fold BatchNorm into the preceding convolution of a frozen model (inference speed).

Trigger inversion never trains the model, so each eval-mode BatchNorm is an affine map that
can be merged into the convolution before it: one kernel fewer per layer in every forward and
backward. Values change only by float rounding (drift measured in docs/benchmarks.md).
Models that torch.fx cannot trace (TorchScript, data-dependent control flow) are returned
unchanged.
"""
from __future__ import annotations

import torch
from torch import nn


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """``model`` with conv+BN pairs fused (its ``net`` for a NormalizedModel); eval mode only."""
    from torch.fx.experimental.optimization import fuse

    if model.training or isinstance(model, torch.jit.ScriptModule):
        return model
    target = getattr(model, "net", model)
    try:
        fused = fuse(target)
    except Exception:  # noqa: BLE001 - untraceable models simply keep their BatchNorms
        return model
    if target is model:
        return fused
    model.net = fused
    return model
