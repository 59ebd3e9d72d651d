"""``cluster.executor: local`` / ``farm run --local``: the same shards in-process, without Ray.

The run that matters happens in a subprocess where ``import ray`` and ``import mlflow`` fail
(a GPU box that has neither), and its rows must equal a Ray run's pair for pair."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from e2e_util import tiny_config, write_config
from farm.config import ConfigError, config_from_dict

ROOT = Path(__file__).resolve().parent.parent
# Makes `import ray` / `import mlflow` fail as on a machine where they are not installed.
BLOCK = """
import sys
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("ray", "mlflow"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, _Absent())
"""


def run_blocked(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def small(out: Path, **over) -> dict:
    """One poisoned model, ours and NC, 12 sampled pairs in shards of 4 (several shards, so
    Ray spreads them over actors while --local runs them in order)."""
    cfg = tiny_config(out, **over)
    cfg["models"] = cfg["models"][1:]
    cfg["pairs"] |= {"mode": "sample", "sample": 12}
    cfg["cluster"] |= {"pairs_per_batch": 4}
    cfg["run"]["zoo_dir"] = str(out.parent / "zoo")  # shared: both runs use the same weights
    return cfg


def test_local_executor_refuses_a_ray_address():
    with pytest.raises(ConfigError, match="executor is 'local'"):
        config_from_dict({**tiny_config(Path("out")), "cluster": {"executor": "local", "address": "auto"}})
    with pytest.raises(ConfigError, match="executor"):
        config_from_dict({**tiny_config(Path("out")), "cluster": {"executor": "dask"}})


def test_local_retries_then_stores_failed_pairs(tmp_path):
    """A shard that raises is tried max_attempts times, then stored as failed; the run completes."""
    from farm.runner import execute

    cfg = small(tmp_path / "out")
    cfg["methods"] = [{"name": "ours", "params": {"epochs": 1}}]
    cfg["cluster"] |= {"executor": "local", "max_attempts": 2, "fault_injection": "raise:1"}
    cfg["tracking"] = {"enabled": False}
    result = execute(config_from_dict(cfg), log_fn=print)
    df = result.store.read(with_triggers=False)
    failed = df[df.status == "failed"]
    assert len(df) == 12 and len(failed) == 4, df[["shard_id", "status"]]
    assert (failed["attempt"] == 2).all() and failed["reason"].str.contains("injected failure").all()


@pytest.mark.slow
def test_local_run_without_ray_or_mlflow_matches_ray(tmp_path, local_ray):
    from farm.cli import main
    from farm.runner import execute

    ray_run = execute(config_from_dict(small(tmp_path / "ray") | {"tracking": {"enabled": False}}), log_fn=print)
    config = write_config(tmp_path / "local.yaml", small(tmp_path / "local") | {"run": {
        **small(tmp_path / "local")["run"], "id": "local-run"}})
    done = run_blocked(f"from farm.cli import main\nsys.exit(main(['run', {str(config)!r}, '--local']))", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "local executor (no Ray)" in done.stdout
    assert "MLflow is not installed here: tracking skipped" in done.stdout
    assert f"farm tables local-run --output {tmp_path / 'local'}" in done.stdout
    assert main(["compare", str(ray_run.store.run_dir), str(tmp_path / "local" / "local-run")]) == 0
