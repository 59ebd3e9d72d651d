"""scripts/gpu-fashion-mnist.sh refuses a PHASES it does not know before it copies or runs anything."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_unknown_phase_is_refused_before_anything_runs(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PHASES="resnet20 bogus")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu-fashion-mnist.sh")], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "unknown phase 'bogus' in PHASES (main, cw, resnet20)" in res.stdout + res.stderr
    assert "=== " not in res.stdout and "copying prev-results" not in res.stdout  # nothing ran
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["gpu-fashion-mnist.log"]  # nothing copied in
