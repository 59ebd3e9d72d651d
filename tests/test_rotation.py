"""farm.rotation rebuilds torchvision's rotation without importing it: bit for bit the same."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from farm.rotation import rotate_bilinear


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(5, 1, 28, 28), (2, 3, 4, 3, 32, 32), (3, 3, 17, 31), (1, 8, 8)])
@pytest.mark.parametrize("deg", [1.0, 2.0, 5.0, -3.7, 45.0, 90.0, 180.0, 270.0, 0.0, 362.0, 89.9])
def test_rotate_bilinear_equals_torchvision(dtype, shape, deg):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(len(shape) + int(deg)), dtype=dtype)
    want = TF.rotate(x, deg, interpolation=InterpolationMode.BILINEAR, fill=0.0)
    got = rotate_bilinear(x, deg)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert torch.equal(got, want), (got - want).abs().max()


def test_rotate_bilinear_is_differentiable():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: rotate_bilinear(t, 3.0), (x,))


def test_evaluating_a_trigger_does_not_import_torchvision():
    """The actors' code path (farm.worker: methods, metrics, augmentation) stays free of
    torchvision, whose import costs each process ~2 s of CPU (farm/rotation.py)."""
    code = ("import sys, farm.worker, farm.methods, farm.methods.augment, farm.runner\n"
            "print('torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
