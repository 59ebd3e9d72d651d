"""Named fault-injection points, so crash tests can kill a run at an exact step.

A resume test that SIGKILLs a run "once the first checkpoint (or shard) exists" races the run: on a busy
machine the remaining epochs (or the next scanner) can finish inside the Ray worker before the
kill lands, and then nothing is left to resume. ``FARM_FAILPOINTS=name[,name...]`` makes every
process of the run (Ray workers inherit the driver's environment) stall for good at the named
points, so the kill always finds the run exactly there. Unset, a point costs one dict lookup.
"""
from __future__ import annotations

import os
import sys
import time

ENV = "FARM_FAILPOINTS"
POINTS = frozenset({"harden.checkpoint", "run.shard_stored", "scan.model_row"})


def hit(name: str) -> None:
    """Stall this process forever if ``name`` is armed in ``FARM_FAILPOINTS``."""
    assert name in POINTS, name
    armed = os.environ.get(ENV)
    if not armed or name not in armed.split(","):
        return
    print(f"failpoint {name}: stalled until killed (pid {os.getpid()})", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)
