"""Parquet store of pair results: one atomic file per finished shard, hive-partitioned.

Layout under the output root (any pyarrow filesystem URI, local path by default)::

    <run_id>/config.yaml            resolved config of the run
    <run_id>/manifest.json          run id, config hash, models (with ground truth), status, pairs
    <run_id>/.lock                  the writer lock of a running driver (farm.runlock)
    <run_id>/pairs/model_id=<m>/method=<x>/variant=<v>/<shard_id>.parquet

Every local file is written as ``.tmp-<random>-<name>`` and moved to its final name, so a crash
can leave at most a hidden temp file, which pyarrow's dataset reader ignores and a resume
sweeps away; the random part keeps two writers from ever sharing a temp file. On an object
store (s3://, gs://) each file is one put to its final key, which the store makes visible only
whole, so no temp object exists to leak. Only the
driver writes, and it holds the run's lock (:mod:`farm.runlock`) while it does, so a second
``farm run``/``--resume`` of a running run is refused instead of racing it.

What is done is decided per (model, method, variant, victim, target), from the rows of
readable shard files, not from shard file names: resuming with another
``cluster.pairs_per_batch`` computes exactly the missing pairs. A shard whose Parquet footer
does not read (a truncated copy, a full disk) is moved aside as ``.corrupt-<name>`` and its
pairs are computed again.
"""
from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from farm.config import ID_RULE, is_safe_id
from farm.errors import StoreError

if TYPE_CHECKING:
    from farm.runlock import RunLock

# 2: adds stop_reason. Version 1 rows cannot say whether a size is converged or a cap's, so
# they are not read (re-run, or read them with the farm version that wrote them).
SCHEMA_VERSION = 2
PARTITIONS = ("model_id", "method", "variant")
# Keys of farm.metrics.ROBUSTNESS, in order (a test keeps them equal); spelled out here so
# that reading a results folder never imports torch.
ROBUST_NAMES = (*[f"r{p}" for p in (98, 96, 88, 80)], *[f"rot{d}" for d in range(1, 6)])
ROBUST_COLUMNS = [f"asr_{k}" for k in ROBUST_NAMES]

# Columns stored in each shard file (the partition columns come from the directory names).
SCHEMA = pa.schema([
    ("schema_version", pa.int32()),
    ("run_id", pa.string()),
    ("config_hash", pa.string()),
    ("shard_id", pa.string()),
    ("dataset", pa.string()),
    ("arch", pa.string()),
    ("model_kind", pa.string()),  # clean | poisoned
    ("attack", pa.string()),  # none | badnets | label_specific | blend | unknown
    ("gt_victim", pa.int32()),  # ground-truth victim of a label-specific backdoor (-1 any, null unknown)
    ("gt_target", pa.int32()),
    ("victim", pa.int32()),  # -1 = all-to-one ("any") pair
    ("target", pa.int32()),
    ("seed", pa.int64()),
    ("pair_seed", pa.int64()),
    ("params_json", pa.string()),
    ("trigger_kind", pa.string()),  # additive | blend
    ("trigger_shape", pa.list_(pa.int32())),
    ("trigger", pa.binary()),  # float16 array of trigger_shape (farm.triggers.Trigger.to_bytes)
    ("trigger_size", pa.float64()),  # NaN when the method never met its ASR bound
    ("raw_size", pa.float64()),  # size of the stored trigger, converged or not
    ("mask_l1", pa.float64()),  # L1 of a blend mask (NC's own size measure)
    ("extra_json", pa.string()),  # method-specific scalars (PairOutcome.extra), JSON object
    ("asr", pa.float64()),  # held-out victim images
    ("asr_correct", pa.float64()),  # held-out images the model classifies correctly ([REC])
    *[(c, pa.float64()) for c in ROBUST_COLUMNS],
    ("asr_attack", pa.float64()),  # attack set, last epoch
    ("n_attack", pa.int32()),
    ("n_heldout", pa.int32()),
    ("steps", pa.int32()),
    ("converged", pa.bool_()),
    ("stop_reason", pa.string()),  # converged | cap | budget | early_stop | failed (farm.methods.STOP_REASONS)
    ("time_to_best", pa.float64()),
    ("trace_t", pa.list_(pa.float32())),
    ("trace_size", pa.list_(pa.float32())),
    # The pair's loss curve (farm.methods.PairOutcome.loss_curve): epoch (CW: iteration) and mean
    # loss. Added after version 2 was out: rows written before it read back as null.
    ("loss_step", pa.list_(pa.int32())),
    ("loss_value", pa.list_(pa.float32())),
    ("status", pa.string()),  # ok | failed
    ("reason", pa.string()),
    ("wall_s", pa.float64()),  # batch wall time / pairs in the batch (amortised)
    ("batch_wall_s", pa.float64()),
    # Held-out + robustness evaluation of the batch / pairs in the batch (amortised), so a run
    # shows its own evaluation share. Added after version 2 was out: older rows read back null.
    ("eval_wall_s", pa.float64()),
    ("batch_pairs", pa.int32()),
    ("device", pa.string()),
    ("worker", pa.string()),
    ("attempt", pa.int32()),
    ("finished_at", pa.timestamp("us", tz="UTC")),
])


# Per-pair arrays (trigger, training trace, loss curve) dominate a row's size; readers that only
# aggregate (the closing summary, MLflow metrics) leave them on disk.
BULK_COLUMNS = ("trigger", "trigger_shape", "trace_t", "trace_size", "loss_step", "loss_value")
SCALAR_COLUMNS = [n for n in SCHEMA.names + list(PARTITIONS) if n not in BULK_COLUMNS]


def hive_partitioning() -> ds.Partitioning:
    """``model_id=<m>/method=<x>/variant=<v>`` read literally: no percent-decoding, so a folder
    named ``model_id=..%2F..%2Fx`` in a received results folder stays that string (and is then
    refused by :func:`check_partition_values`) instead of becoming a path."""
    return ds.HivePartitioning(pa.schema([(p, pa.string()) for p in PARTITIONS]), segment_encoding="none")


def check_partition_values(df: pd.DataFrame, where: str) -> None:
    """Partition values become file names (figures, MLflow artifacts): each must be a safe id."""
    for col in PARTITIONS:
        if col in df.columns:
            bad = sorted(v for v in set(df[col].dropna()) if not is_safe_id(str(v)))
            if bad:
                raise StoreError(f"{where}: partition folder {col}={bad[0]!r} is not a valid id ({ID_RULE}); "
                                 "the results folder was altered or is not a farm run; remove that folder")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path or any URI pyarrow understands (file://, s3://, gs://)."""
    try:
        if "://" in uri:
            return pafs.FileSystem.from_uri(uri)
        import os

        return pafs.LocalFileSystem(), os.path.abspath(uri)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StoreError(f"output {uri!r}: cannot open this location ({exc})") from None


@dataclass
class RunStore:
    """The results of one run under an output root."""

    output: str
    run_id: str

    def __post_init__(self) -> None:
        if not is_safe_id(self.run_id):
            # Run ids come from the command line (--resume, farm tables) as well as configs:
            # checked here, where they become paths, so none can escape the output root.
            raise StoreError(f"run id {self.run_id!r}: {ID_RULE} "
                             "(a folder name under the output root, no path separators)")
        self.fs, root = filesystem(self.output)
        self.root = root.rstrip("/")
        self.run_dir = f"{self.root}/{self.run_id}"
        self.pairs_dir = f"{self.run_dir}/pairs"

    # ---- run metadata ---------------------------------------------------------------------
    def exists(self) -> bool:
        return self.fs.get_file_info(f"{self.run_dir}/manifest.json").type == pafs.FileType.File

    def create(self, config_yaml: str, manifest: dict[str, Any]) -> None:
        try:
            self.fs.create_dir(self.pairs_dir, recursive=True)
            self._write_atomic(f"{self.run_dir}/config.yaml", config_yaml.encode())
            self.write_manifest(manifest)
        except OSError as exc:
            raise StoreError(f"cannot write results to {self.run_dir}: {exc}. Choose a writable "
                             f"run.output (or --set run.output=PATH).") from None

    def ensure_writable(self) -> None:
        """Create the run folder and write a probe file, so a read-only or unreachable output
        fails before any model is trained, not after hours of work."""
        probe = f"{self.run_dir}/.write-probe"
        try:
            self.fs.create_dir(self.run_dir, recursive=True)
            with self.fs.open_output_stream(probe) as f:
                f.write(b"ok")
            self.fs.delete_file(probe)
        except OSError as exc:
            raise StoreError(f"run.output {self.output!r}: cannot write to {self.run_dir} ({exc}). Choose a "
                             f"writable folder or URI with --set run.output=PATH.") from None

    def remove_if_unstarted(self) -> None:
        """Delete the run folder if no manifest was ever written (a run that failed before its
        first result: only its lock file is there), so failures leave no empty run behind."""
        if not self.exists() and self.fs.get_file_info(self.run_dir).type == pafs.FileType.Directory:
            self.fs.delete_dir(self.run_dir)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        self._write_atomic(f"{self.run_dir}/manifest.json", json.dumps(manifest, indent=2).encode())

    def manifest(self) -> dict[str, Any]:
        return json.loads(self._read(f"{self.run_dir}/manifest.json"))

    def config_yaml(self) -> str:
        return self._read(f"{self.run_dir}/config.yaml").decode()

    def _read(self, path: str) -> bytes:
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except (FileNotFoundError, OSError) as exc:
            raise StoreError(f"run {self.run_id!r}: cannot read {path} ({exc}); is the run id and "
                             f"output folder right?") from None

    def _write_atomic(self, path: str, data: bytes) -> None:
        try:
            if self.fs.type_name != "local":
                # An object store publishes an object only when its (single or multipart) upload
                # completes, so one put to the final key is already atomic; a temp key plus
                # "move" there is copy + delete, which a crash between the two would leak.
                with self.fs.open_output_stream(path) as f:
                    f.write(data)
                return
            directory, name = path.rsplit("/", 1)
            tmp = f"{directory}/.tmp-{uuid.uuid4().hex[:12]}-{name}"
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)
        except OSError as exc:
            raise StoreError(f"cannot write {path} ({exc}); check free space and permissions of run.output") from None

    def lock(self) -> "RunLock | None":
        """The run's writer lock (taken), or None where the output cannot hold one (object stores)."""
        from farm.runlock import RunLock, RunLocked

        if self.fs.type_name != "local":
            return None
        try:
            return RunLock(self.run_dir).acquire(f"run {self.run_id!r} under {self.output!r}")
        except RunLocked as exc:
            raise StoreError(str(exc)) from None
        except OSError as exc:
            raise StoreError(f"run.output {self.output!r}: cannot write to {self.run_dir} ({exc}). Choose a "
                             f"writable folder with --set run.output=PATH.") from None

    # ---- shards ---------------------------------------------------------------------------
    def shard_path(self, model_id: str, method: str, variant: str, shard_id: str) -> str:
        return f"{self.pairs_dir}/model_id={model_id}/method={method}/variant={variant}/{shard_id}.parquet"

    def sweep(self) -> list[str]:
        """Before a resume, under the lock: delete temp files of dead writers and move shards
        whose Parquet footer does not read aside (``.corrupt-<name>``); return those shards."""
        for path in shard_files(self.fs, self.pairs_dir, hidden=True):
            if path.rsplit("/", 1)[1].startswith(".tmp-"):
                self.fs.delete_file(path)
        corrupt = [p for p in shard_files(self.fs, self.pairs_dir) if not readable(p, self.fs)]
        for path in corrupt:
            directory, name = path.rsplit("/", 1)
            self.fs.move(path, f"{directory}/.corrupt-{name}")
        return corrupt

    def done_pairs(self) -> set[tuple[str, str, str, int, int]]:
        """(model_id, method, variant, victim, target) of every stored row (ok or failed)."""
        df = self.read(columns=[*PARTITIONS, "victim", "target"])
        return set(zip(df["model_id"], df["method"], df["variant"], df["victim"].astype(int),
                       df["target"].astype(int)))

    def write_shard(self, model_id: str, method: str, variant: str, shard_id: str,
                    rows: list[dict[str, Any]]) -> str:
        table = rows_to_table(rows)
        final = self.shard_path(model_id, method, variant, shard_id)
        directory = final.rsplit("/", 1)[0]
        self.fs.create_dir(directory, recursive=True)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self._write_atomic(final, buf.getvalue())
        return final

    def write_parquet(self, relpath: str, table: pa.Table) -> str:
        """Write any table atomically at ``<run_dir>/<relpath>`` (derived results such as the
        alignment get the same temp-then-rename guarantee as pair shards)."""
        final = f"{self.run_dir}/{relpath}"
        self.fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        self._write_atomic(final, buf.getvalue())
        return final

    # ---- reading --------------------------------------------------------------------------
    def read(self, columns: list[str] | None = None, with_triggers: bool = True,
             job: tuple[str, str, str] | None = None) -> pd.DataFrame:
        """All pair rows of the run (of one (model, method, variant) ``job`` only, read from its
        partition alone) as a DataFrame (empty frame with the columns if none)."""
        return read_pairs(self.pairs_dir, self.fs, columns=columns, with_triggers=with_triggers, job=job)


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    missing = [f.name for f in SCHEMA if any(f.name not in r for r in rows)]
    if missing:
        raise StoreError(f"pair rows lack columns {missing}")
    return pa.Table.from_pylist([{f.name: r[f.name] for f in SCHEMA} for r in rows], schema=SCHEMA)


def shard_files(fs: pafs.FileSystem, root: str, hidden: bool = False) -> list[str]:
    """The Parquet files under ``root`` (sorted); ``hidden``: the dot-files (temp, corrupt) instead."""
    sel = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    return sorted(i.path for i in fs.get_file_info(sel) if i.type == pafs.FileType.File
                  and i.base_name.endswith(".parquet") and i.base_name.startswith(".") == hidden)


def read_partitioned(root: str, fs: pafs.FileSystem, schema: pa.Schema, version: int, fix: str,
                     columns: list[str], job: tuple[str, str, str] | None = None) -> pd.DataFrame | None:
    """``columns`` of the ``<partition>=<value>/...`` Parquet files under ``root`` (None if there
    are none), every file checked to hold ``version`` (else a StoreError ending in ``fix``) and
    every partition value checked to be a safe id; sorted by job and pair.

    Read with the full schema: columns added later (always nullable, same schema version) come
    back as nulls from files written before them. Pair shards and alignment shards both go
    through here. ``job`` (model_id, method, variant) reads that job's rows only."""
    if fs.get_file_info(root).type != pafs.FileType.Directory:
        return None
    partitions = pa.schema([(p, pa.string()) for p in PARTITIONS])
    dataset = ds.dataset(root, filesystem=fs, format="parquet", schema=pa.unify_schemas([schema, partitions]),
                         partitioning=hive_partitioning())
    if not dataset.files:
        return None
    where = None
    if job is not None:
        where = (ds.field("model_id") == job[0]) & (ds.field("method") == job[1]) & (ds.field("variant") == job[2])
    unknown = set(_table(dataset, fs, root, ["schema_version"], where).column(0).to_pylist()) - {version}
    if unknown:
        raise StoreError(f"{root}: written with schema version(s) {sorted(unknown)}; this farm reads version "
                         f"{version} only. {fix}")
    df = _table(dataset, fs, root, columns, where).to_pandas()
    check_partition_values(df, root)
    return df.sort_values(["model_id", "method", "variant", "victim", "target"], ignore_index=True) \
        if {"model_id", "method", "variant", "victim", "target"} <= set(df.columns) else df


def read_pairs(pairs_dir: str, fs: pafs.FileSystem | None = None, columns: list[str] | None = None,
               with_triggers: bool = True, job: tuple[str, str, str] | None = None) -> pd.DataFrame:
    if fs is None:
        fs, pairs_dir = filesystem(pairs_dir)
    df = read_partitioned(pairs_dir, fs, SCHEMA, SCHEMA_VERSION,
                          "Version 2 added stop_reason, which older rows lack. Re-run them with this farm, or read "
                          "them with the farm version that wrote them.", columns or _default_columns(with_triggers),
                          job)
    return _empty(columns, with_triggers) if df is None else df


def readable(path: str, fs: pafs.FileSystem) -> bool:
    """True when the file's Parquet footer reads (a truncated file's does not)."""
    try:
        with fs.open_input_file(path) as f:
            pq.read_metadata(f)
        return True
    except (pa.ArrowInvalid, OSError):
        return False


def _table(dataset: ds.Dataset, fs: pafs.FileSystem, where: str, columns: list[str],
           rows: ds.Expression | None = None) -> pa.Table:
    """``dataset.to_table`` (of the ``rows`` matching, if given) whose errors name the
    unreadable file and the fix."""
    try:
        return dataset.to_table(columns=columns, filter=rows)
    except (pa.ArrowInvalid, OSError) as exc:
        bad = next((f for f in dataset.files if not readable(f, fs)), where)
        raise StoreError(f"{bad}: not a readable Parquet shard ({exc}); `farm run --resume` moves it aside "
                         "and recomputes its pairs") from None


def _default_columns(with_triggers: bool) -> list[str]:
    return [n for n in SCHEMA.names + list(PARTITIONS) if with_triggers or n != "trigger"]


def _empty(columns: list[str] | None, with_triggers: bool) -> pd.DataFrame:
    names = columns or _default_columns(with_triggers)
    return pd.DataFrame({n: [] for n in names})
