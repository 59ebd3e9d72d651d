"""``ray job submit --working-dir . -- python jobs/tables.py RUN_ID --output ROOT``

Regenerate a run's tables and figures from its Parquet files and log them to MLflow
(``farm tables``); needs no Ray workers, only read access to the output location.
"""
import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("tables", sys.argv[1:], join_cluster=False))
