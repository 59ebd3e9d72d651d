"""The CLI without surprises (issue 14): argument errors at parse time, every bench method,
validate that checks files, no empty run folders, ls/show, quiet output, --version, help."""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from e2e_util import tiny_config, write_config
from farm.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def _walk(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {a}", h) for a, h in _walk(sub))
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield "/".join(action.option_strings) or action.dest, action.help


def test_every_option_has_help_and_version_prints(capsys):
    missing = [name for name, help_text in _walk(build_parser()) if not help_text]
    assert missing == []
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("farm 0.")


@pytest.mark.parametrize("args, says", [
    (["--method", "nope"], "unknown method(s) nope"),
    (["--pairs", "0"], "--pairs: expected an integer >= 1, got 0"),
    (["--pairs-per-batch", "1,x"], "'1,x'"),
    (["--rounds", "-1"], "--rounds"),
])
def test_bench_argument_errors_are_usage_errors(args, says, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and says in err and "Traceback" not in err


@pytest.fixture(scope="module")
def bench_config(tmp_path_factory):
    """One tiny poisoned zoo model (trained once for the module) and budgets small enough
    that every method finishes 2 pairs in seconds."""
    out = tmp_path_factory.mktemp("bench")
    cfg = tiny_config(out / "out", run={"name": "b", "output": str(out / "out"), "seed": 0, "zoo_dir": str(out / "zoo")})
    cfg["models"] = cfg["models"][1:]
    cfg["methods"] = [{"name": "cw", "params": {"max_iterations": 3, "max_rounds": 1, "init_cost": 0.001, "max_cost": 0.01}}]
    return write_config(out / "bench.yaml", cfg)


def test_bench_unknown_model_fails_before_the_zoo(tmp_path, capsys):
    out = tmp_path / "out"
    path = write_config(tmp_path / "c.yaml", tiny_config(out, run={"name": "b", "output": str(out), "seed": 0}))
    assert main(["bench", str(path), "--model", "nope"]) == 2
    assert "--model nope: not in the config; it has clean, poisoned" in capsys.readouterr().err
    assert not (out / "zoo").exists()  # nothing trained or loaded


def _methods() -> list[str]:
    from farm.methods import METHODS

    return sorted(METHODS)


@pytest.mark.parametrize("method", _methods())
def test_bench_runs_every_method(method, bench_config, capsys):
    assert main(["bench", str(bench_config), "--method", method, "--pairs", "2", "--pairs-per-batch", "2",
                 "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    unit = "pairs/s" if method == "cw" else "pair-epochs/s"
    assert f"poisoned {method}      P=2:" in out and unit in out


def test_epochs_reach_both_halves_of_nc_prune_and_not_cw():
    from farm.inprocess import has_epochs, with_epochs
    from farm.methods import METHODS

    params = with_epochs(METHODS["nc_prune"].Params, {"nc": {"lr": 0.5}}, 3)
    assert params == {"nc": {"lr": 0.5, "epochs": 3}, "ours": {"epochs": 3}}
    assert not has_epochs(METHODS["cw"].Params) and has_epochs(METHODS["uap"].Params)


# ---- validate, and runs that fail before their first result ---------------------------------
def _bad_config(tmp_path: Path) -> Path:
    cfg = tiny_config(tmp_path / "out")
    cfg["datasets"]["real"] = {"name": "cifar10", "root": str(tmp_path / "no-cifar")}
    cfg["models"] = [{"id": "user", "dataset": "syn", "arch": "small_cnn", "source": "checkpoint",
                      "checkpoint": str(tmp_path / "missing.pt")}]
    cfg["pairs"] = {"mode": "list", "list": [[1, 1], [0, 99]]}
    return write_config(tmp_path / "bad.yaml", cfg)


def test_validate_reports_config_and_file_problems_at_once(tmp_path, capsys):
    assert main(["validate", str(_bad_config(tmp_path))]) == 2
    err = capsys.readouterr().err
    for problem in ("pairs.list[0]: victim and target must differ", "pairs.list[1]: [0, 99] but model 'user' has 10",
                    f"models[0].checkpoint: {tmp_path / 'missing.pt'} is not a file",
                    f"datasets.real.root: {tmp_path / 'no-cifar'} is not a folder"):
        assert problem in err, err
    assert main(["validate", str(_bad_config(tmp_path)), "--no-check-files"]) == 2
    assert "missing.pt" not in capsys.readouterr().err
    good = write_config(tmp_path / "good.yaml", tiny_config(tmp_path / "out"))
    assert main(["validate", str(good)]) == 0 and "files present" in capsys.readouterr().out


def test_run_with_a_missing_checkpoint_fails_at_once_and_leaves_no_run_folder(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "out", run={"name": "r", "id": "r1", "output": str(tmp_path / "out"), "seed": 0})
    cfg["models"] = [{"id": "user", "dataset": "syn", "arch": "small_cnn", "source": "checkpoint",
                      "checkpoint": str(tmp_path / "missing.pt")}]
    assert main(["run", str(write_config(tmp_path / "c.yaml", cfg))]) == 2
    assert "missing.pt is not a file" in capsys.readouterr().err
    assert not (tmp_path / "out" / "r1").exists()


def test_a_run_failing_after_its_folder_exists_removes_it(tmp_path):
    """A failure between the run folder and the manifest (here: the Ray address does not
    answer) leaves no empty folder behind."""
    import ray

    from farm.config import config_from_dict
    from farm.errors import RunError
    from farm.runner import execute

    ray.shutdown()  # a Ray this worker process already holds (session fixture) would be reused as is
    raw = tiny_config(tmp_path / "out", run={"name": "r", "id": "r2", "output": str(tmp_path / "out"), "seed": 0})
    raw["cluster"] = {"address": f"127.0.0.1:{_free_port()}"}  # nothing listens: fails after open_run
    with pytest.raises(RunError, match="does not answer"):
        execute(config_from_dict(raw), log_fn=lambda _m: None)
    assert (tmp_path / "out").is_dir() and not (tmp_path / "out" / "r2").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scan_config(tmp_path: Path, root: Path, **over) -> Path:
    return write_config(tmp_path / "scan.yaml", {"run_id": "s1", "output": str(tmp_path / "out"),
                                                 "zoo_dir": str(tmp_path / "zoo"),
                                                 "dataset": {"name": "cifar10", "root": str(root)}, **over})


def _harden_config(tmp_path: Path, root: Path, **over) -> Path:
    return write_config(tmp_path / "harden.yaml", {
        "run_id": "h1", "output": str(tmp_path / "out"), "zoo_dir": str(tmp_path / "zoo"),
        "datasets": {"c10": {"name": "cifar10", "root": str(root)}},
        "models": [{"id": "m", "dataset": "c10", "arch": "small_cnn"}], **over})


@pytest.mark.parametrize("command", ["scan", "harden"])
def test_scan_and_harden_that_cannot_start_leave_no_run_folder(command, tmp_path, capsys):
    """A missing dataset root, a root without the dataset's files (found only when it loads) and
    a bad method parameter each fail with exit 2 naming the problem, before any run folder."""
    config = _scan_config if command == "scan" else _harden_config
    path = "dataset" if command == "scan" else "datasets.c10"
    (tmp_path / "empty").mkdir()
    bad = ({"scanners": [{"kind": "karm", "core": "nc", "params": {"epochz": 3}}]} if command == "scan" else
           {"methods": [{"name": "natural"}, {"name": "ours", "params": {"lr": -1}}]})
    for root, over, says in [("no-cifar", {}, f"{path}.root: {tmp_path / 'no-cifar'} is not a folder"),
                             ("empty", {}, "does not hold cifar-10-batches-py"),
                             ("empty", bad, "scanners[0].params.epochz" if command == "scan" else
                              "methods[1].params.lr: must be > 0")]:
        assert main([command, str(config(tmp_path, tmp_path / root, **over))]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err
        assert not (tmp_path / "out").exists() and not (tmp_path / "zoo").exists()


# ---- ls / show ------------------------------------------------------------------------------
def _run_folder(out: Path, run_id: str, status: str, stored: int, total: int) -> None:
    """A run folder as `farm run` leaves it: config, manifest and ``stored`` pair rows."""
    from farm.grid import Job, Pair, Shard
    from farm.store import RunStore
    from farm.rows import ShardAttempt, failed_rows

    store = RunStore(str(out), run_id)
    manifest = {"run_id": run_id, "status": status, "created": "2026-11-26T10:00:00",
                **({"pairs": total} if status == "complete" else {"pairs_total": total})}
    store.create("run: {}\n", manifest)
    job = Job("m", "ours", "plain", "{}")
    pairs = tuple(Pair(0, t) for t in range(1, stored + 1))
    info = {"dataset": "syn", "arch": "small_cnn", "model_kind": "clean", "attack": "none", "gt_victim": None,
            "gt_target": None}
    rows = failed_rows(ShardAttempt(Shard(job, pairs, 0, "s0"), info, run_id, "h", 1), (3, 8, 8), "test")
    store.write_shard("m", "ours", "plain", "s0", [r | {"status": "ok"} for r in rows])


def test_ls_and_show_report_status_progress_and_places(tmp_path, capsys):
    from farm.runlock import RunLock

    out = tmp_path / "results"
    _run_folder(out, "done", "complete", 4, 4)
    _run_folder(out, "stopped", "running", 2, 6)
    _run_folder(out, "live", "running", 1, 6)
    (out / "zoo").mkdir()  # not a run: a manifest of its own, no config
    (out / "zoo" / "manifest.json").write_text('{"entries": []}')
    with RunLock(out / "live").acquire("live"):
        assert main(["ls", "--output", str(out)]) == 0
        lines = capsys.readouterr().out.splitlines()
    table = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(table) == {"done", "stopped", "live"}
    assert table["done"][2:4] == ["complete", "4/4"]
    assert table["stopped"][2:4] == ["stopped", "2/6"]
    assert table["live"][2:4] == ["running", "1/6"]
    assert main(["show", "stopped", "--output", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "status:   stopped" in shown and "m/ours/plain" in shown and "2 pairs" in shown
    assert f"farm run --resume stopped --set run.output={out}" in shown
    assert main(["show", "nope", "--output", str(out)]) == 2
    assert "farm ls --output" in capsys.readouterr().err


# ---- ui -------------------------------------------------------------------------------------
def test_ui_defaults_one_worker_serves_artifacts_and_opens_on_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    assert main(["ui", "--output", str(tmp_path), "--dry-run", "--port", str(_free_port())]) == 0
    out = capsys.readouterr().out
    assert "--workers 1" in out and f"--artifacts-destination {tmp_path.resolve() / 'mlartifacts'}" in out
    assert out.startswith("MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false ")  # as serve() runs it
    assert "workflowType=machine_learning" in out


def test_ui_server_runs_without_mlflows_job_runner(monkeypatch):
    from farm.ui import server_env

    monkeypatch.delenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", raising=False)
    assert server_env()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    monkeypatch.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "true")  # a user who wants it keeps it
    assert server_env()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


def test_ui_refuses_a_taken_port_and_exits_nonzero_when_the_server_fails(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert main(["ui", "--output", str(tmp_path), "--port", str(taken.getsockname()[1])]) == 2
    assert "Pass another --port" in capsys.readouterr().err
    # An unusable store: the server exits at once, and so does farm, with its status.
    rc = main(["ui", "--tracking-uri", "nosuchscheme://x", "--port", str(_free_port())])
    assert rc != 0 and "the MLflow server exited with status" in capsys.readouterr().err


# ---- quiet by default -----------------------------------------------------------------------
QUIET_PROBE = """
import logging, sys
from farm.cli import configure_output
configure_output(int(sys.argv[1]))
import mlflow  # configures its loggers on import, from the environment configure_output set
logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
"""


def test_mlflow_info_lines_only_with_verbose():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MLFLOW_LOGGING_LEVEL", None)
    runs = [subprocess.run([sys.executable, "-c", QUIET_PROBE, str(v)], env=env, capture_output=True, text=True,
                           timeout=120) for v in (0, 1)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:] + runs[1].stderr[-2000:]
    assert "Creating initial" not in runs[0].stderr and "INFO mlflow.store.db.utils" in runs[1].stderr
