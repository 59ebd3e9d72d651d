"""Byte-stable rendering of report tables as Markdown, CSV and LaTeX.

Every cell is formatted here, by one explicit rule, instead of by pandas/tabulate defaults
(which vary between versions and locales): the same frame always gives the same bytes.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

MISSING = "n/a"


@dataclass
class Table:
    """One paper table: this run's numbers, the paper's reference numbers, and notes."""

    name: str  # file stem, e.g. "table4_methods"
    title: str  # the paper's label, e.g. "Table 4 (time / size / ASR per method)"
    frame: pd.DataFrame  # this run
    reference: pd.DataFrame | None = None  # the paper's numbers (never this run's)
    reference_source: str = ""
    notes: list[str] = field(default_factory=list)  # missing pairs/methods, readings


def cell(v: Any) -> str:
    """One cell as text: NaN/None -> n/a, integral floats without decimals, else 4 significant
    digits (at least the units for |v| >= 1000), bools as yes/no."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return MISSING
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if hasattr(v, "item"):  # numpy scalars
        return cell(v.item())
    return str(v)


def _rows(frame: pd.DataFrame) -> list[list[str]]:
    return [[cell(v) for v in row] for row in frame.itertuples(index=False, name=None)]


def to_csv(frame: pd.DataFrame) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([str(c) for c in frame.columns])
    w.writerows(_rows(frame))
    return buf.getvalue()


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no rows)\n"
    head = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(frame)]
    return "\n".join(lines) + "\n"


def to_markdown(t: Table) -> str:
    parts = [f"## {t.title}\n", "**This run**\n", _md_table(t.frame)]
    if t.reference is not None:
        parts += [f"**Paper reference** (not this run; source: {t.reference_source})\n", _md_table(t.reference)]
    if t.notes:
        parts += ["**Notes**\n", "\n".join(f"- {n}" for n in t.notes) + "\n"]
    return "\n".join(parts)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(s: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in s).replace("->", r"$\to$").replace("±", r"$\pm$")


def _tex_table(frame: pd.DataFrame, caption: str) -> str:
    cols = "l" * len(frame.columns) or "l"
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{tex_escape(caption)}}}",
             rf"\begin{{tabular}}{{{cols}}}", r"\hline",
             " & ".join(tex_escape(str(c)) for c in frame.columns) + r" \\", r"\hline"]
    lines += [" & ".join(tex_escape(c) for c in r) + r" \\" for r in _rows(frame)]
    lines += [r"\hline", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def to_tex(t: Table) -> str:
    parts = [f"% {t.title}\n", _tex_table(t.frame, f"{t.title} (this run)")]
    if t.reference is not None:
        parts.append(_tex_table(t.reference, f"{t.title}: paper reference, {t.reference_source}"))
    parts += [f"% note: {n}\n" for n in t.notes]
    return "\n".join(parts)
