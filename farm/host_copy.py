"""Host-to-device copies that do not stall a GPU's queue (shared by training and augmentation)."""
from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """``t`` on ``device``. From the host to a GPU the copy goes through pinned memory and does
    not block: a pageable copy makes the host wait for every kernel queued before it, a sync per
    step in a loop that otherwise has none. A tensor already on the device is returned as is
    (only host tensors can be pinned)."""
    if t.device.type == "cpu" and torch.device(device).type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)
