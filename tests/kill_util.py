"""SIGKILL a farm command at a chosen point, for resume tests (shared by harden and scan).

The driver runs in its own session with a tagged environment, so the processes it started
(its local Ray) can be found and reaped by pid afterwards (test_resilience._reap), never by name.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from test_resilience import ROOT, _free_port, _reap


def farm_env(tag: str, ray_tmp: str) -> dict[str, str]:
    # Short RAY_TMPDIR (unix socket paths < 108 chars); a stale RAY_ADDRESS must not be joined.
    return dict(os.environ, PYTHONPATH=str(ROOT), FARM_TEST_TAG=tag, RAY_TMPDIR=ray_tmp,
                RAY_USAGE_STATS_ENABLED="0", RAY_ADDRESS=f"127.0.0.1:{_free_port()}")


def kill_then_rerun(args: list[str], cwd: Path, ready: Callable[[], bool], timeout_s: float = 240,
                    after_kill: Callable[[], None] | None = None, failpoint: str | None = None) -> str:
    """Run ``farm ARGS``, SIGKILL it (whole session) once ``ready()``, reap its Ray, call
    ``after_kill()`` (the state the rerun starts from), run it again to the end and return the
    second run's output (which must succeed).

    ``failpoint`` (see farm.failpoints) stalls the first run at that point: without it a Ray
    task running when ``ready()`` turned true may finish the remaining work before the kill
    lands (seen in CI under load), leaving nothing to resume. The rerun runs unarmed."""
    tag, ray_tmp = uuid.uuid4().hex, tempfile.mkdtemp(prefix="fk", dir="/tmp")
    env = farm_env(tag, ray_tmp)
    first_env = dict(env, FARM_FAILPOINTS=failpoint) if failpoint else env
    cmd = [sys.executable, "-m", "farm", *args]
    try:
        with open(cwd / "killed.log", "w") as log:  # a file, not a pipe: an unread pipe can block
            driver = subprocess.Popen(cmd, env=first_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
            deadline = time.time() + timeout_s
            while not ready() and driver.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert driver.poll() is None, f"finished before the kill point:\n{(cwd / 'killed.log').read_text()[-3000:]}"
            assert ready(), f"kill point not reached in {timeout_s}s:\n{(cwd / 'killed.log').read_text()[-3000:]}"
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
        _reap(tag, grace_s=0)  # at once: an orphaned Ray worker would otherwise finish the task
        if after_kill is not None:
            after_kill()
        again = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
                               start_new_session=True, check=False)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
        return again.stdout + again.stderr
    finally:
        _reap(tag)
        shutil.rmtree(ray_tmp, ignore_errors=True)
