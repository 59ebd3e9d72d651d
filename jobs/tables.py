"""``ray job submit --working-dir . -- python jobs/tables.py RUN_ID --output ROOT [--format md,csv,tex] [--align]``

Regenerate a run's tables and figures from its Parquet files and log them to MLflow
(``farm tables``). With ``--align`` a missing alignment is computed on Ray first and, inside
a job, joins the job's cluster (Ray sets RAY_ADDRESS for job drivers).
"""
import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("tables", sys.argv[1:], join_cluster=False))
