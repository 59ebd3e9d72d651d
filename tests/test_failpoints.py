"""farm.failpoints: unarmed points return, armed ones stall the process until it is killed."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from farm import failpoints


def test_unarmed_and_other_points_return(monkeypatch):
    monkeypatch.delenv(failpoints.ENV, raising=False)
    failpoints.hit("scan.model_row")
    monkeypatch.setenv(failpoints.ENV, "harden.checkpoint")
    failpoints.hit("scan.model_row")  # armed: another point only


def test_unknown_point_is_a_programming_error():
    with pytest.raises(AssertionError):
        failpoints.hit("no.such.point")


def test_armed_point_stalls_until_killed():
    code = "from farm import failpoints; failpoints.hit('harden.checkpoint'); print('passed')"
    env = dict(os.environ, FARM_FAILPOINTS="scan.model_row,harden.checkpoint")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("failpoint harden.checkpoint: stalled until killed")
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
    finally:
        proc.kill()
    out, _ = proc.communicate()
    assert "passed" not in out
