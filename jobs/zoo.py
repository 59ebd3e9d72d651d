"""``ray job submit --working-dir . -- python jobs/zoo.py CONFIG [--set k=v]``

Train (or reuse) the config's zoo models as Ray tasks on the cluster (``farm zoo``).
``run.zoo_dir`` must be storage every node can write (docs/cluster.md).
"""
import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("zoo", sys.argv[1:], join_cluster=True))
