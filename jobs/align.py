"""`ray job submit` entry point for `farm align`: align a finished run's triggers on the cluster.

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/align.py RUN_ID --output /shared/results

Inside a Ray job the driver joins the job's cluster (address "auto").
"""
from __future__ import annotations

import sys

from farm.cli import main

if __name__ == "__main__":
    sys.exit(main(["align", *sys.argv[1:], *([] if "--address" in sys.argv else ["--address", "auto"])]))
