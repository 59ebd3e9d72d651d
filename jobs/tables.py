"""`ray job submit` entry point for `farm tables`: regenerate a run's paper tables and figures.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/tables.py RUN_ID --output /shared/results --format md,csv,tex

Inside a Ray job, the alignment that `farm tables` runs when it is missing joins the job's
cluster (RAY_ADDRESS is set by Ray for job drivers).
"""
from __future__ import annotations

import sys

from farm.cli import main

if __name__ == "__main__":
    sys.exit(main(["tables", *sys.argv[1:]]))
