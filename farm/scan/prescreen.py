"""K-Arm label pre-screening [KA] (METHODS.md §2(g)): which arms are worth optimising.

A backdoor target shows up among the top-k softmax labels of clean images far more often
than a normal label does: for every image (all-to-one) or for every image of its victim
class (label-specific). Screening on clean predictions is what lets K-Arm optimise a handful
of arms instead of K(K-1) pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Arm:
    """One candidate trigger: ``victim`` None means all-to-one into ``target``."""

    victim: int | None
    target: int


def top_k(num_classes: int) -> int:
    """k = round(0.25 K), and 2 for K <= 8 [KA]."""
    return 2 if num_classes <= 8 else max(1, round(0.25 * num_classes))


def prescreen(logits: torch.Tensor, global_share: float = 0.95, pair_share: float = 0.9,
              max_victims: int = 3, fallback: int | None = None) -> list[Arm]:
    """Candidate arms from clean-image logits N×K.

    A label in more than ``global_share`` of all top-k lists is a global (all-to-one) arm.
    Otherwise target j with victim i is an arm when j is in the top-k of at least
    ``pair_share`` of the images whose top-1 is i (at most ``max_victims`` victims per
    target, the most frequent first). When nothing passes, the ``fallback`` (default k)
    most frequent non-top-1 labels become global arms [REC]: a scan must score every model,
    and a model with no candidate is then judged on its most suspicious labels.
    """
    n, k_classes = logits.shape
    k = top_k(k_classes)
    top = logits.topk(k, dim=1).indices  # N×k
    in_top = torch.zeros(n, k_classes, dtype=torch.bool).scatter_(1, top, True)
    share = in_top.float().mean(0)
    best = int(share.argmax())
    if float(share[best]) > global_share:
        return [Arm(None, best)]
    pred = top[:, 0]
    arms: list[Arm] = []
    for target in range(k_classes):
        victims = []
        for victim in range(k_classes):
            rows = pred == victim
            if victim == target or not bool(rows.any()):
                continue
            frac = float(in_top[rows, target].float().mean())
            if frac >= pair_share:
                victims.append((frac, victim))
        arms += [Arm(v, target) for _, v in sorted(victims, reverse=True)[:max_victims]]
    if arms:
        return arms
    runner_up = in_top.clone()
    runner_up[torch.arange(n), pred] = False  # an image's own top-1 says nothing about a target
    order = runner_up.float().mean(0).argsort(descending=True)
    return [Arm(None, int(t)) for t in order[: fallback or k]]
