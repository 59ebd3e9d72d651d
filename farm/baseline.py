"""The speed baseline: one pair at a time, written the way a paper's reference code is.

Every speed claim of the farm is a ratio to this loop, measured in the same process
(``farm bench --baseline``): absolute times on shared machines are noise, ratios are not.
It is deliberately plain — one pair, ``torch.optim.Adam``, the model forward on B images,
Python floats for the per-epoch bookkeeping (``.item()`` every step), no batching over pairs,
no compile — and follows the same algorithm and defaults as the farm's ours/NC (METHODS.md
§2(a), §2(b)) so that both do the same work per pair-epoch. It is a timing reference only;
its triggers are not stored or compared.
"""
from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from farm.methods.nc import NCParams
from farm.methods.pixel import PixelParams, smooth_step
from farm.methods.squash import squash, unsquash

BASELINE_METHODS = ("ours", "nc")


def _pixel_parts(shape: tuple[int, ...], g: torch.Generator,
                 device: torch.device) -> tuple[list[torch.Tensor], Callable, Callable]:
    """[PB]: u_p, u_n in [0, 1); x' = clamp(x + p+ - p-); R = sum max_c s(u_p) + sum max_c s(u_n)."""
    u_p = torch.rand(shape, generator=g).to(device).requires_grad_()
    u_n = torch.rand(shape, generator=g).to(device).requires_grad_()

    def stamp(x: torch.Tensor) -> torch.Tensor:
        return (x + u_p.clamp(0, 1) - u_n.clamp(0, 1)).clamp(0, 1)

    def reg() -> torch.Tensor:
        return smooth_step(u_p).amax(0).sum() + smooth_step(u_n).amax(0).sum()

    return [u_p, u_n], stamp, reg


def _nc_parts(shape: tuple[int, ...], g: torch.Generator,
             device: torch.device) -> tuple[list[torch.Tensor], Callable, Callable]:
    """[NC]: mask/pattern in tanh space; x' = (1-m) x + m p; R = |m|_1."""
    a = unsquash(torch.rand(shape[1:], generator=g, dtype=torch.float64)).float().to(device).requires_grad_()
    b = unsquash(torch.rand(shape, generator=g, dtype=torch.float64)).float().to(device).requires_grad_()

    def stamp(x: torch.Tensor) -> torch.Tensor:
        m = squash(a)
        return (1 - m) * x + m * squash(b)

    def reg() -> torch.Tensor:
        return squash(a).sum()

    return [a, b], stamp, reg


def baseline_pair(model: torch.nn.Module, images: torch.Tensor, target: int, method: str, epochs: int,
                  batch_size: int, seed: int) -> dict[str, Any]:
    """Invert one pair (``images``: N×C×H×W in [0,1]); returns best reg, last ASR and steps."""
    if method not in BASELINE_METHODS:
        raise ValueError(f"--baseline: no baseline for method {method!r} (have {', '.join(BASELINE_METHODS)})")
    prm = PixelParams() if method == "ours" else NCParams()
    g = torch.Generator().manual_seed(seed)
    parts = _pixel_parts if method == "ours" else _nc_parts
    variables, stamp, reg_fn = parts(tuple(images.shape[1:]), g, images.device)
    opt = torch.optim.Adam(variables, lr=prm.lr, betas=prm.betas)
    n = images.shape[0]
    b = min(batch_size, n)
    labels = torch.full((b,), target, dtype=torch.long, device=images.device)
    cost = 0.0 if method == "nc" else prm.init_cost
    up = down = es_count = 0
    best_reg, es_ref, asr, raised, lowered = float("inf"), float("inf"), 0.0, False, False
    best: list[torch.Tensor] = []
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(images.device)
        losses, accs, regs = [], [], []
        for k in range(n // b):
            x = images[perm[k * b:(k + 1) * b]]
            logits = model(stamp(x))
            ce = F.cross_entropy(logits, labels)
            reg = reg_fn()
            loss = ce + cost * reg
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            regs.append(reg.item())
            accs.append((logits.argmax(1) == labels).float().mean().item())
        asr, reg_avg = sum(accs) / len(accs), sum(regs) / len(regs)
        success = asr >= prm.asr_threshold
        if success and reg_avg < best_reg:
            best_reg = reg_avg
            best = [v.detach().clone() for v in variables]
        if method == "nc" and best_reg < float("inf"):  # [NC] early stop
            es_count = es_count + 1 if best_reg >= prm.early_stop_threshold * es_ref else 0
            es_ref = min(es_ref, best_reg)
            if raised and lowered and es_count >= prm.early_stop_patience:
                break
        if cost == 0 and method == "nc":
            up = up + 1 if success else 0
            if up >= prm.patience:
                cost, up, down = prm.init_cost, 0, 0
            continue
        up, down = (up + 1, 0) if success else (0, down + 1)
        if up >= prm.patience:
            cost, up, raised = cost * prm.cost_up, 0, True
        elif down >= prm.patience:
            cost, down, lowered = cost / prm.cost_down, 0, True
    return {"best": best, "best_reg": best_reg, "asr": asr}


def time_baseline(model: torch.nn.Module, images: list[torch.Tensor], targets: list[int], method: str,
                  epochs: int, batch_size: int, seed: int) -> float:
    """Seconds the baseline takes for these pairs, one after the other."""
    start = time.perf_counter()
    for i, (x, t) in enumerate(zip(images, targets)):
        baseline_pair(model, x, t, method, epochs, batch_size, seed + i)
    return time.perf_counter() - start
