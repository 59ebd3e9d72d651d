"""``farm ls`` and ``farm show``: what runs a results root holds, how far each got, where its
files are. Reads manifests, Parquet row counts and the run lock only: no torch, Ray or MLflow,
so it answers in a second even while runs are writing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from farm.runlock import is_held
from farm.config import is_safe_id
from farm.store import PARTITIONS, RunStore, StoreError, filesystem


@dataclass
class RunStatus:
    """One run as ``farm ls`` lists it."""

    run_id: str
    kind: str  # "bench" (farm run) or "scan" (farm scan)
    status: str  # complete, running, stopped (no process holds it: resume it), unreadable
    pairs_done: int | None
    pairs_total: int | None
    created: str

    @property
    def progress(self) -> str:
        done = "?" if self.pairs_done is None else str(self.pairs_done)
        return f"{done}/{self.pairs_total if self.pairs_total is not None else '?'}"


def status_of(store: RunStore) -> RunStatus:
    """Status from the manifest and the lock: a run whose manifest says running but whose
    lock nobody holds was stopped (killed, interrupted, machine lost) and can be resumed."""
    manifest = store.manifest()
    kind = manifest.get("kind", "bench")
    state = str(manifest.get("status", "running"))
    local = store.fs.type_name == "local"
    if state == "running" and local and not is_held(store.run_dir):
        state = "stopped"
    try:
        done: int | None = len(store.read(columns=["victim"])) if kind == "bench" else None
    except StoreError:
        done, state = None, "unreadable"
    total = manifest.get("pairs") if manifest.get("status") == "complete" else manifest.get("pairs_total")
    return RunStatus(store.run_id, kind, state, done, total, str(manifest.get("created", ""))[:19])


def list_runs(output: str) -> list[RunStatus]:
    """Every run folder (one with a manifest) directly under ``output``, oldest first."""
    fs, root = filesystem(output)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    stores = [RunStore(output, i.base_name) for i in infos
              if i.type == pafs.FileType.Directory and is_safe_id(i.base_name)]
    return sorted((status_of(s) for s in stores if _is_run(s)), key=lambda r: (r.created, r.run_id))


def _is_run(store: RunStore) -> bool:
    """A run folder has a manifest and its config (the zoo folder has a manifest only)."""
    return store.exists() and store.fs.get_file_info(f"{store.run_dir}/config.yaml").type == pafs.FileType.File


def format_runs(runs: list[RunStatus], output: str) -> str:
    if not runs:
        return f"no runs under {output}"
    width = max(len(r.run_id) for r in runs)
    lines = [f"{'RUN':{width}}  {'KIND':5}  {'STATUS':10}  {'PAIRS':>13}  CREATED (UTC)"]
    lines += [f"{r.run_id:{width}}  {r.kind:5}  {r.status:10}  {r.progress:>13}  {r.created}" for r in runs]
    return "\n".join(lines)


def describe(output: str, run_id: str) -> str:
    """``farm show``: status, pairs done per job, and where the run's files and views are."""
    store = RunStore(output, run_id)
    if not store.exists():
        raise StoreError(f"no run {run_id!r} under {output!r}; `farm ls --output {output}` lists the runs there")
    st = status_of(store)
    lines = [f"run:      {run_id} ({st.kind})", f"status:   {st.status}", f"created:  {st.created or '?'} UTC"]
    if st.kind == "bench":
        lines.append(f"pairs:    {st.progress} stored")
        if st.status != "unreadable":
            df = store.read(columns=[*PARTITIONS, "status"])
            for key, g in df.groupby(list(PARTITIONS), sort=True):
                failed = int((g["status"] != "ok").sum())
                lines.append(f"  {'/'.join(key):40s} {len(g):6d} pairs" + (f", {failed} failed" if failed else ""))
    lines.append(f"folder:   {store.run_dir}")
    lines.append(f"config:   {store.run_dir}/config.yaml")
    if st.kind == "bench":
        lines.append(f"parquet:  {store.pairs_dir}")
    tables = Path(store.run_dir) / "tables"
    if store.fs.type_name == "local" and tables.is_dir():
        lines.append(f"tables:   {tables}")
    if store.fs.type_name == "local" and (Path(store.root) / "mlflow.db").is_file():
        lines.append(f"mlflow:   {Path(store.root) / 'mlflow.db'}  (farm ui --output {output})")
    lines.append(f"next:     {_next_step(st, output)}")
    return "\n".join(lines)


def _next_step(st: RunStatus, output: str) -> str:
    if st.status == "stopped":
        return f"farm run --resume {st.run_id} --set run.output={output}"
    if st.status == "running":
        return "wait; the run is being written (farm ls shows its progress)"
    if st.status == "unreadable":
        return f"farm run --resume {st.run_id} --set run.output={output} (moves corrupt shards aside)"
    return f"farm tables {st.run_id} --output {output}"
