"""What a pickle would import, read statically (pickletools: nothing in the file runs).

Its own module because both the checkpoint loader and the TrojAI folder reader ask it, and
neither should import the other's internals for it.
"""
from __future__ import annotations

import io
import pickletools
import zipfile
from pathlib import Path

PICKLE_SCAN_LIMIT = 64 << 20  # bytes of data.pkl the static scan decompresses (a zip bomb stops here)


def pickled_globals(path: Path) -> list[str] | None:
    """Names a pickle would import (statically, via pickletools: nothing runs); None if unparsable."""
    raw = path.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(raw)):
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            names = [n for n in zf.namelist() if n.endswith("data.pkl")]
            if not names:
                return None
            with zf.open(names[0]) as f:
                raw = f.read(PICKLE_SCAN_LIMIT + 1)
            if len(raw) > PICKLE_SCAN_LIMIT:
                return None  # larger than any state dict's pickle: treated as corrupt, never inflated
    found: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(raw):
            if op.name in ("GLOBAL", "INST"):
                found.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(".".join(strings[-2:]))
            elif isinstance(arg, str):
                strings.append(arg)
    except Exception:  # noqa: BLE001 - any parse failure means "not a pickle": corrupt file
        return None
    return sorted(set(found)) if found else None
