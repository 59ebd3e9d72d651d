"""First forward of a trusted TorchScript model, in a child process with a time and memory limit.

TorchScript is a program: its ``forward`` may loop forever, allocate without bound or touch
files (``torch.from_file(..., shared=True)`` creates any file it names). farm loads it only
when the user trusts it (``trust_code``), and even then runs the first forward here, in a
separate process under ``RLIMIT_AS`` and a wall-clock timeout, so a model that hangs or
explodes fails with a message naming the file instead of hanging ``farm zoo``/``farm run``
or taking the machine's memory. The child prints one JSON line: the output shape, or the
error it met.

Usage (internal): ``python -m farm.models.probe PATH C H W``.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

PROBE_TIMEOUT_S = 120.0  # generous for a large model's first CPU forward on 2 images
PROBE_MEMORY_BYTES = 8 << 30  # address space; importing torch alone maps about 3 GiB


class ProbeFailed(Exception):
    """The child did not return an output shape; ``stage`` is where: "load" (not a readable
    archive), "forward" (the forward raised) or "limit" (time or memory limit, or killed)."""

    def __init__(self, stage: str, message: str):
        super().__init__(message)
        self.stage = stage


def _limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def first_forward_shape(path: Path, image_shape: tuple[int, int, int], timeout_s: float = PROBE_TIMEOUT_S,
                        memory_bytes: int = PROBE_MEMORY_BYTES) -> list[int]:
    """Output shape of the module at ``path`` on 2 zero images, computed in a limited child."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "farm.models.probe", str(path), *map(str, image_shape)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env,
                              preexec_fn=lambda: _limit_memory(memory_bytes))
    except subprocess.TimeoutExpired:
        raise ProbeFailed("limit", f"the first forward did not finish within {timeout_s:g} s (an endless loop?)") from None
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        if "MemoryError" in done.stderr or "bad_alloc" in done.stderr or done.returncode < 0:
            tail = f"it exceeded the {memory_bytes >> 30} GiB memory limit or was killed ({tail})"
        raise ProbeFailed("limit", tail[:300])
    result = json.loads(lines[-1])
    if "error" in result:
        memory = any(w in result["error"] for w in ("allocate", "bad_alloc", "MemoryError"))
        raise ProbeFailed("limit" if memory else result["stage"],
                          f"memory limit of {memory_bytes >> 30} GiB: {result['error']}" if memory else result["error"])
    return result["shape"]


def _main(argv: list[str]) -> int:
    import warnings

    import torch

    warnings.simplefilter("ignore")
    path, shape = argv[0], tuple(int(v) for v in argv[1:4])
    stage = "load"
    try:
        module = torch.jit.load(path, map_location="cpu").eval()
        stage = "forward"
        with torch.no_grad():
            out = module(torch.zeros(2, *shape))
        print(json.dumps({"shape": list(out.shape)}))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which names the file
        # TorchScript wraps the cause: its last line is the informative one.
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
        print(json.dumps({"stage": stage, "error": f"{type(exc).__name__}: {lines[-1] if lines else ''}"[:300]}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
