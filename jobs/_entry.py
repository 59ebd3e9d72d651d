"""Shared body of the ``ray job submit`` entry points: run one ``farm`` subcommand.

Under ``ray job submit --working-dir .`` the job's driver starts in the uploaded copy of the
repository; putting that copy first on ``sys.path`` makes the job run the code that was
submitted, not whatever ``farm`` happens to be installed on the head node.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(command: str, argv: list[str], join_cluster: bool) -> int:
    """``farm <command> <argv>``; with ``join_cluster`` the job joins the running cluster
    (``--address auto``) unless the caller named an address."""
    sys.path.insert(0, str(ROOT))
    from farm.cli import main

    args = [command, *argv]
    if join_cluster and "--address" not in argv:
        args += ["--address", "auto"]
    return main(args)
