"""``ray job submit --working-dir . -- python jobs/tables.py RUN_ID --output ROOT [--format md,csv,tex]``

Regenerate a run's tables and figures from its Parquet files and log them to MLflow
(``farm tables``). When the alignment is missing, ``farm tables`` computes it on Ray and, inside
a job, joins the job's cluster (Ray sets RAY_ADDRESS for job drivers).
"""
import sys

from _entry import run

if __name__ == "__main__":
    sys.exit(run("tables", sys.argv[1:], join_cluster=False))
