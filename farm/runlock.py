"""One writer per run: an exclusive ``flock`` on ``<run_dir>/.lock`` for the life of a run.

Two ``farm run``/``--resume`` of one run id would write the same shards, race on the
manifest and duplicate rows. The lock is taken before anything is written and held until
the process ends; the kernel releases it when the holder dies, even by SIGKILL, so a crashed
run never leaves a stale lock behind. The file records who holds it, for the refusal message.

Only local (and NFS) paths can be locked; a run on an object store (s3://, gs://) has no
lock, which docs/security.md states.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".lock"


class RunLocked(RuntimeError):
    """Another live process holds the run's lock; the message names it."""


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw)
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def is_held(run_dir: str | Path) -> bool:
    """Whether a live process holds the run's lock (``farm ls``: running vs stopped). Probes
    with a non-blocking shared lock, so it never blocks and is released at once."""
    path = Path(run_dir) / LOCK_NAME
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class RunLock:
    """Held from :meth:`acquire` until :meth:`release` (or process exit)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, run_label: str) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            raise RunLocked(f"{run_label} is being written by another farm process ({holder}); "
                            "wait for it to finish, or stop it, before running or resuming it again") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
