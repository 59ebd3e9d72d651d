"""``ray job submit --working-dir . -- python jobs/align.py RUN_ID --output ROOT``

Align a finished run's stored triggers (by size, by ASR) on the cluster (``farm align``); the
job's driver joins the running cluster (address "auto").
"""
import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("align", sys.argv[1:], join_cluster=True))
