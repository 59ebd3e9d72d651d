"""Writing report files into a folder that may come from someone else.

``farm tables`` writes into ``<run>/tables`` of a results folder that may have been received
from another machine. A symlink planted there (``tables/index.md -> ~/.bashrc``) would make a
plain ``open(..., "w")`` overwrite the victim file. Here every file is written to a fresh
temp file in its folder and renamed into place, and no path component below (or at) the
output folder may be a symlink.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from farm.store import StoreError


def prepare_folder(folder: Path, flag: str = "--out") -> Path:
    """Create ``folder`` (a real directory, not a file or a symlink) or say why it cannot be.

    A symlink already inside it is refused here too, before minutes of rendering; the writes
    check again (:func:`write_file`), since one could be planted in between."""
    if folder.is_symlink():
        raise StoreError(f"{flag} {folder}: is a symlink; refusing to write through it. Pass a real folder with --out")
    link = next(_symlinks_below(folder), None)
    if link is not None:
        raise StoreError(f"{link}: is a symlink inside the output folder; refusing to write through it. Remove it, "
                         "or pass a fresh --out folder")
    if folder.exists() and not folder.is_dir():
        raise StoreError(f"{flag} {folder}: is a file, not a folder; pass a folder with --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=folder, prefix=".tmp-probe-")
        probe.close()
    except OSError as exc:
        raise StoreError(f"{flag} {folder}: cannot write there ({exc.strerror or exc}); "
                         "choose a writable folder with --out") from None
    return folder


def _symlinks_below(folder: Path) -> Iterator[Path]:
    """Symlinks anywhere under ``folder`` (not followed: os.walk does not enter linked folders)."""
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                yield Path(root, name)


def write_file(folder: Path, rel: str, data: bytes) -> Path:
    """Write ``folder/rel`` atomically, refusing '..', absolute paths and symlinks on the way."""
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise StoreError(f"{folder}: refusing to write {rel!r} (outside the output folder)")
    current = folder
    for part in parts[:-1]:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            raise StoreError(f"{current}: is a symlink or a file where a folder belongs; refusing to write through "
                             "it. Remove it, or pass a fresh --out folder")
        current.mkdir(exist_ok=True)
    final = current / parts[-1]
    if final.is_symlink():
        raise StoreError(f"{final}: is a symlink; refusing to overwrite its target. Remove it, or pass a fresh "
                         "--out folder")
    fd, tmp = tempfile.mkstemp(dir=current, prefix=f".tmp-{parts[-1]}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def write_frames(folder: Path, frames: dict[str, Any], floatfmt: str) -> Path:
    """Each frame as ``<name>.csv`` and ``<name>.md`` in ``folder`` (created, checked), through
    :func:`write_file`: the scan and harden tables get the same symlink-refusing atomic writes
    as ``farm tables``."""
    prepare_folder(folder)
    for name, frame in frames.items():
        write_file(folder, f"{name}.csv", frame.to_csv(index=False).encode())
        write_file(folder, f"{name}.md", (frame.to_markdown(index=False, floatfmt=floatfmt) + "\n").encode())
    return folder
