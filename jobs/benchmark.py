"""``ray job submit --working-dir . -- python jobs/benchmark.py CONFIG [--set k=v] [--resume ID]``

A benchmark run (``farm run``) whose actors are scheduled on the cluster the job was
submitted to (docs/cluster.md).
"""
import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("run", sys.argv[1:], join_cluster=True))
