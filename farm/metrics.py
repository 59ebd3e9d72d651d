"""Evaluation metrics of METHODS.md §1, §2(f) and §2(g).

Everything here is recomputed from a stored :class:`~farm.triggers.Trigger`, so the store
only has to keep trigger arrays: ASR on held-out images, robustness of the stamped image to
rescaling/rotation, the NC MAD anomaly index, size/ASR alignment between methods and the
hardening relative improvement (Eq 12).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from farm.rotation import rotate_bilinear
from farm.triggers import Trigger, prune, stamp, trigger_size

Transform = Callable[[Tensor], Tensor]

MAD_CONSISTENCY = 1.4826  # makes MAD a consistent estimator of sigma for normal data [NC]
MAD_THRESHOLD = 2.0  # NC flags labels (and models) whose deviation exceeds 2 MADs
EXACT_SCAN_MAX = 64  # align_by_asr: scan every k up to this size, else bisect [REC]
LOCAL_SCAN_RADIUS = 8  # align_by_asr: exact scan window around the bisection result [REC]


# ---- forward passes ----------------------------------------------------------------------
def _device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter/buffer; parameter-free models run on CPU."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _as_float(x: Tensor, device: torch.device) -> Tensor:
    """Models take [0,1] floats; uint8 images (how datasets are cached) are scaled by 1/255."""
    x = x.to(device)
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    return x.float()


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch_size: int = 512) -> Tensor:
    """Argmax labels (int64, on CPU) of an N×C×H×W batch, uint8 or [0,1] float.

    Batched so held-out sets larger than device memory allows can be scored in one call.
    """
    device = _device(model)
    out = [model(_as_float(x[i : i + batch_size], device)).argmax(1).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.int64)


@torch.no_grad()
def _hit_counts(
    model: nn.Module,
    images: Tensor,
    views: Callable[[Tensor], list[Tensor]],
    n_views: int,
    target: int,
    batch_size: int,
) -> Tensor:
    """Count, per view, the images classified as ``target``.

    ``views(xb)`` turns one float image batch into ``n_views`` batches of the same size
    (different triggers and/or transforms). All views of an image chunk go through the model
    in one forward of at most ``max(batch_size, n_views)`` images, so e.g. the 9 robustness
    columns or several pruning levels cost one pass over the data instead of one each.
    """
    device = _device(model)
    hits = torch.zeros(n_views, dtype=torch.int64)
    step = max(1, batch_size // n_views)
    for i in range(0, len(images), step):
        xb = _as_float(images[i : i + step], device)
        pred = model(torch.cat(views(xb))).argmax(1).view(n_views, len(xb))
        hits += (pred == target).sum(1).cpu()
    return hits


def asr(
    model: nn.Module,
    trigger: Trigger,
    images: Tensor,
    target: int,
    transform: Transform | None = None,
    batch_size: int = 512,
) -> float:
    """Fraction of ``images`` whose stamped (then ``transform``-ed) version is labelled ``target``.

    This is the ASR of METHODS.md §1; it is NaN for an empty image set because a rate over
    zero images is undefined, and NaN keeps such pairs out of averages instead of biasing
    them toward 0.
    """
    if len(images) == 0:
        return math.nan
    trig = trigger.to(_device(model))

    def views(xb: Tensor) -> list[Tensor]:
        s = stamp(xb, trig)
        return [transform(s) if transform is not None else s]

    return _hit_counts(model, images, views, 1, target, batch_size).item() / len(images)


# ---- robustness transforms (§2(f)) -------------------------------------------------------
def rescale(x: Tensor, s: float) -> Tensor:
    """Centre crop keeping fraction ``s`` of the area, resized back bilinearly [REC §2(f)].

    The crop side is ``round(H*sqrt(s))`` (and ``round(W*sqrt(s))``), i.e. a deterministic
    twin of the random-resized-crop augmentation. Note that on small images a crop may
    round to the full side (32×32 with s=0.98 gives side 32, the identity). When ``H - side``
    is even the crop is exactly centred and the centre pixel maps onto itself.
    """
    h, w = x.shape[-2:]
    ch, cw = round(h * math.sqrt(s)), round(w * math.sqrt(s))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top : top + ch, left : left + cw]
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=False)


def rotate(x: Tensor, deg: float) -> Tensor:
    """Rotate by ``+deg`` degrees about the image centre, bilinear, fill 0 [REC §2(f)].

    Direction follows torchvision: positive angles turn the image counter-clockwise as
    displayed (row 0 at the top), so with +90° a pixel right of the centre moves above it.
    The centre is ((W-1)/2, (H-1)/2); the CPU/GPU grid sampler used is deterministic. Equal to
    torchvision's ``rotate`` (farm.rotation), without importing torchvision.
    """
    return rotate_bilinear(x, float(deg))


ROBUSTNESS: dict[str, Transform] = {
    **{f"r{p}": partial(rescale, s=p / 100) for p in (98, 96, 88, 80)},
    **{f"rot{d}": partial(rotate, deg=float(d)) for d in range(1, 6)},
}


def robust_asr(
    model: nn.Module, trigger: Trigger, images: Tensor, target: int, batch_size: int = 512
) -> dict[str, float]:
    """ASR after each :data:`ROBUSTNESS` transform of the whole stamped image (§2(f)).

    Each chunk is stamped once and its 9 transformed copies share one forward pass. The
    untransformed column is :func:`asr` and is left to the caller.
    """
    if len(images) == 0:
        return {name: math.nan for name in ROBUSTNESS}
    trig = trigger.to(_device(model))
    fns = list(ROBUSTNESS.values())

    def views(xb: Tensor) -> list[Tensor]:
        s = stamp(xb, trig)
        return [fn(s) for fn in fns]

    hits = _hit_counts(model, images, views, len(fns), target, batch_size)
    return {name: h / len(images) for name, h in zip(ROBUSTNESS, hits.tolist())}


@torch.no_grad()
def evaluate_pairs(
    model: nn.Module,
    triggers: Sequence[Trigger],
    images: Sequence[Tensor],
    correct: Sequence[Tensor],
    targets: Sequence[int],
    batch_size: int = 512,
) -> list[dict[str, float]]:
    """Held-out ASR, ASR on correctly classified images and the :data:`ROBUSTNESS` columns of
    many pairs at once: per pair ``{"asr", "asr_correct", <transform>: ...}``.

    Equal to :func:`asr` and :func:`robust_asr` per pair, but a shard's evaluation is a few
    large forwards instead of several small ones per pair (issue #11: evaluation dominated
    short runs). The images of all pairs are stamped, concatenated and transformed once per
    transform; ``correct`` (bool per image, the clean prediction was right) selects the
    subset for ``asr_correct`` from the same forward, so it costs no extra pass.
    """
    device = _device(model)
    fns = [None, *ROBUSTNESS.values()]
    out: list[dict[str, float]] = []
    sizes = [len(x) for x in images]
    # Group pairs so that one group's stamped images fill about one forward per view. Larger
    # groups are slower on a CPU (scripts/eval-speed.py: 2048 images per view ran 0.7x the
    # per-pair calls, 300-600 ran 1.1-1.3x), as the transforms' buffers leave the caches.
    groups, cur, filled = [], [], 0
    for i, n in enumerate(sizes):
        if cur and filled + n > batch_size:
            groups.append(cur)
            cur, filled = [], 0
        cur.append(i)
        filled += n
    if cur:
        groups.append(cur)
    for group in groups:
        stamped = torch.cat([stamp(_as_float(images[i], device), triggers[i].to(device)) for i in group])
        tgt = torch.cat([torch.full((sizes[i],), targets[i], dtype=torch.long) for i in group]).to(device)
        hits = [(model(fn(stamped) if fn else stamped).argmax(1) == tgt).cpu() for fn in fns]
        start = 0
        for i in group:
            part = [h[start:start + sizes[i]] for h in hits]
            start += sizes[i]
            ok = correct[i].cpu()
            res = {"asr": _rate(part[0]), "asr_correct": _rate(part[0][ok])}
            res.update({name: _rate(h) for name, h in zip(ROBUSTNESS, part[1:])})
            out.append(res)
    return out


def _rate(hits: Tensor) -> float:
    """Share of True in a bool vector; NaN when empty (see :func:`asr`)."""
    return hits.double().mean().item() if len(hits) else math.nan


# ---- MAD outlier detection (§2(g)) -------------------------------------------------------
def anomaly_index(sizes: Sequence[float]) -> tuple[float, list[int]]:
    """NC's MAD rule: (anomaly index, flagged labels), labels being positions in ``sizes``.

    med = median(s), MAD = 1.4826 * median(|s - med|), index = |min s - med| / MAD, and a
    label is flagged when s_i < med and |s_i - med| / MAD > 2 (only small triggers are
    suspicious). NaN sizes (failed inversions) are ignored; with fewer than 3 valid values a
    median/MAD is meaningless and ``(nan, [])`` is returned. If MAD == 0 every valid size
    below the median is infinitely far out: index inf (flagging those labels), else 0.
    """
    s = np.asarray(sizes, dtype=np.float64)
    valid = ~np.isnan(s)
    if valid.sum() < 3:
        return math.nan, []
    v = s[valid]
    med = float(np.median(v))
    mad = MAD_CONSISTENCY * float(np.median(np.abs(v - med)))
    labels = np.flatnonzero(valid)
    low = v < med
    if mad == 0:
        return (math.inf if v.min() < med else 0.0), labels[low].tolist()
    dev = np.abs(v - med) / mad
    return abs(float(v.min()) - med) / mad, labels[low & (dev > MAD_THRESHOLD)].tolist()


# ---- alignment (§2(g)) -------------------------------------------------------------------
def align_by_size(
    model: nn.Module,
    ours: Trigger,
    other: Trigger,
    images: Tensor,
    target: int,
    batch_size: int = 512,
) -> dict[str, float | int]:
    """Compare held-out ASRs at equal size (Fig 9/13, NC Prune).

    k = size(ours); the other trigger is pruned to its k top pixels only when it is larger,
    because pruning a smaller trigger would not change it. ``asr_other`` is the uncut ASR,
    kept so the cost of the cut is visible.
    """
    k = trigger_size(ours)
    size_other = trigger_size(other)
    cut = prune(other, k) if size_other > k else other
    return {
        "k": k,
        "size_other": size_other,
        "asr_other_cut": asr(model, cut, images, target, batch_size=batch_size),
        "asr_other": asr(model, other, images, target, batch_size=batch_size),
        "asr_ours": asr(model, ours, images, target, batch_size=batch_size),
    }


def _asr_at(
    model: nn.Module, ours: Trigger, ks: Sequence[int], images: Tensor, target: int,
    batch_size: int,
) -> list[float]:
    """ASR of prune(ours, k) for each k, with all levels sharing forward passes."""
    trigs = [prune(ours, k).to(_device(model)) for k in ks]

    def views(xb: Tensor) -> list[Tensor]:
        return [stamp(xb, t) for t in trigs]

    hits = _hit_counts(model, images, views, len(trigs), target, batch_size)
    return [h / len(images) for h in hits.tolist()]


def _first_at_or_below(
    model: nn.Module, ours: Trigger, ks: Sequence[int], a_ref: float, images: Tensor,
    target: int, batch_size: int,
) -> int | None:
    """First k of ``ks`` (in the given order) whose pruned ASR is <= a_ref, else None.

    Levels are evaluated in chunks that fill one batch, stopping at the first chunk that
    contains a hit so that a hit near the top costs few forwards.
    """
    chunk = max(1, batch_size // len(images))
    for i in range(0, len(ks), chunk):
        part = ks[i : i + chunk]
        for k, a in zip(part, _asr_at(model, ours, part, images, target, batch_size)):
            if a <= a_ref:
                return k
    return None


def align_by_asr(
    model: nn.Module,
    ours: Trigger,
    a_ref: float,
    images: Tensor,
    target: int,
    batch_size: int = 512,
) -> int:
    """Size k* that ours needs to be no better than a reference ASR (Fig 10/14, §2(g)).

    Ours' lowest-scoring pixels are removed one by one from n = size(ours) downward, and
    k* is the *first* k met in that descending order (i.e. the largest k < n) with
    ASR(prune(ours, k)) <= a_ref; k* = n if ASR(ours) <= a_ref already. Because ASR need not
    be monotone in k, a lower k may exceed a_ref again; it is not considered.

    For n <= 64 every k is scanned. For larger n a bisection on [0, n] (assuming ASR grows
    with k) brackets the crossing, then k = found+8 .. found-8 is scanned exactly and the
    first k there is returned [REC]. If no evaluated k reaches a_ref (a_ref below the
    target rate of the clean images) the floor 0 is returned.
    """
    n = trigger_size(ours)
    if len(images) == 0 or asr(model, ours, images, target, batch_size=batch_size) <= a_ref:
        return n
    if n <= EXACT_SCAN_MAX:
        ks = list(range(n - 1, -1, -1))
    else:
        lo, hi = 0, n  # invariant: ASR(hi) > a_ref; lo is the best guess for ASR <= a_ref
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _asr_at(model, ours, [mid], images, target, batch_size)[0] <= a_ref:
                lo = mid
            else:
                hi = mid
        top = min(n - 1, lo + LOCAL_SCAN_RADIUS)
        ks = list(range(top, max(-1, lo - LOCAL_SCAN_RADIUS - 1), -1))
    k = _first_at_or_below(model, ours, ks, a_ref, images, target, batch_size)
    return 0 if k is None else k


# ---- tables ------------------------------------------------------------------------------
def relative_improvement(d_orig: np.ndarray | Tensor, d_hard: np.ndarray | Tensor) -> float:
    """Hardening relative improvement, Eq 12 of §2(g).

    RI = mean over off-diagonal (i, j) of (dh_ij - d_ij) / d_ij, d the original and dh the
    hardened model's class distances (positive = hardening made triggers larger). Entries
    where either distance is NaN (failed pairs) are skipped; NaN if nothing remains.
    """
    d = np.asarray(d_orig, dtype=np.float64)
    dh = np.asarray(d_hard, dtype=np.float64)
    if d.shape != dh.shape or d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"need two equal K×K matrices, got {d.shape} and {dh.shape}")
    use = ~np.eye(len(d), dtype=bool) & ~np.isnan(d) & ~np.isnan(dh)
    if not use.any():
        return math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.mean((dh[use] - d[use]) / d[use]))


def summarise_sizes(sizes: Iterable[float]) -> dict[str, float]:
    """mean/median/std/min/max (and n) over the non-NaN sizes, for the result tables.

    NaN sizes are failed pairs (§5.3); they are counted out rather than treated as 0 so a
    failure does not look like a perfect (empty) trigger. std is the population std
    (ddof=0). With no valid size every statistic is NaN and n = 0.
    """
    v = np.asarray(list(sizes), dtype=np.float64)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return {"mean": math.nan, "median": math.nan, "std": math.nan,
                "min": math.nan, "max": math.nan, "n": 0}
    return {"mean": float(v.mean()), "median": float(np.median(v)), "std": float(v.std()),
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}
