"""Figures with deterministic bytes: Agg backend, fixed size/DPI/font, no timestamps."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

STYLE = {"font.family": "DejaVu Sans", "font.size": 8, "svg.hashsalt": "farm", "path.simplify": False}


def masked(mat: np.ndarray) -> np.ma.MaskedArray:
    """A K×K pair matrix with the diagonal (v == t, not a pair) and missing pairs masked."""
    k = mat.shape[0]
    return np.ma.masked_invalid(np.where(np.eye(k, dtype=bool), np.nan, mat))


def heatmap_figure(mat: np.ndarray, title: str, class_names: list[str], cbar_label: str,
                   fmt: str = "{:.0f}", cmap: str = "viridis", log: bool = False) -> plt.Figure:
    """The heat-map figure (callers close it); row victim, column target, diagonal masked."""
    k = mat.shape[0]
    data = masked(mat)
    with plt.rc_context(STYLE):
        side = max(3.2, 0.42 * k + 1.6)
        fig, ax = plt.subplots(figsize=(side + 0.8, side), dpi=100)
        norm = None
        if log and data.count() and float(data.min()) > 0:
            norm = matplotlib.colors.LogNorm(vmin=float(data.min()), vmax=float(data.max()))
        cm = plt.get_cmap(cmap).with_extremes(bad="#dddddd")
        im = ax.imshow(data, cmap=cm, norm=norm, interpolation="nearest")
        ax.set_xticks(range(k), class_names[:k], rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), class_names[:k])
        ax.set_xlabel("target")
        ax.set_ylabel("victim")
        ax.set_title(title)
        if k <= 16:
            for (i, j), v in np.ndenumerate(mat):
                if i != j and np.isfinite(v):
                    ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=6, color="w")
        fig.colorbar(im, ax=ax, label=cbar_label, fraction=0.046, pad=0.04)
        fig.tight_layout()
    return fig


def png_bytes(fig: plt.Figure) -> bytes:
    """PNG without the Software/date metadata, so equal figures give equal bytes."""
    with plt.rc_context(STYLE):
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def heatmap(mat: np.ndarray, title: str, class_names: list[str], cbar_label: str,
            fmt: str = "{:.0f}", cmap: str = "viridis", log: bool = False) -> bytes:
    """A K×K pair heat map (row victim, column target, diagonal masked) as PNG bytes."""
    return png_bytes(heatmap_figure(mat, title, class_names, cbar_label, fmt, cmap, log))


def curves(series: dict[str, tuple[np.ndarray, np.ndarray]], title: str, xlabel: str, ylabel: str,
           logy: bool = True) -> bytes:
    """Step curves (label -> (x, y)) on one axis, as PNG bytes (Fig 8: best size vs time)."""
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(5.0, 3.4), dpi=100)
        for label, (x, y) in sorted(series.items()):
            ax.step(x, y, where="post", label=label)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
    return png_bytes(fig)


def save(png: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path
