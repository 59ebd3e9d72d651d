"""Shared body of the ``ray job submit`` entry points: run one ``farm`` subcommand.

Under ``ray job submit --working-dir .`` the job's driver starts in the uploaded copy of the
repository; putting that copy first on ``sys.path`` makes the job run the code that was
submitted, not whatever ``farm`` happens to be installed on the head node.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(command: str, argv: list[str], join_cluster: bool) -> int:
    """``farm <command> <argv>``; with ``join_cluster`` the job joins the running cluster
    (``--address auto``) unless the caller named an address."""
    sys.path.insert(0, str(ROOT))
    _import_all()
    from farm.cli import main

    args = [command, *argv]
    if join_cluster and "--address" not in argv:
        args += ["--address", "auto"]
    return main(args)


def _import_all() -> None:
    """Import every farm module now, before the job joins the cluster. Joining sets up the job's
    runtime env on the head again, which can rewrite the very working-dir copy this driver
    imports from; a module first imported after that was seen to fail with ModuleNotFoundError
    although its file was there (Ray 2.60, `ray job submit --working-dir`)."""
    import farm

    for info in pkgutil.walk_packages(farm.__path__, "farm."):
        if info.name.endswith("__main__"):  # `python -m farm`: importing it runs the CLI
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:  # an optional dependency this node lacks: that command will say so
            pass
