"""Build every missing zoo model of a run, in parallel as Ray tasks where Ray is up.

Training happens once per zoo key (the hash of what determines the weights), so two config
entries that differ only in their id share one model, and a second run reuses the cache.
Tasks write into the zoo folder themselves: on a multi-node cluster ``run.zoo_dir`` must be
shared storage (docs/cluster.md); locally it is just a folder. Before the first task,
:func:`check_nodes_see` proves that every node that may train sees the driver's folder: a node
with a private folder of that name would otherwise train into it, and the driver would then
train every such model again by itself, slowly and without a word.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from farm.config import DatasetSpec, ModelSpec
from farm.models.zoo import ZooEntry, ensure_model, write_manifest, zoo_key
from farm.threads import config_threads

Items = list[tuple[ModelSpec, DatasetSpec]]
Trainer = Callable[[Items, Path, Callable[[str], None]], None]


def is_cached(spec: ModelSpec, dataset: DatasetSpec, zoo_dir: Path) -> bool:
    return (zoo_dir / zoo_key(spec, dataset) / "meta.json").is_file()


def ensure_models(items: Items, zoo_dir: Path, log: Callable[[str], None],
                  parallel: Trainer | None = None, device: str = "cpu", threads: int = 1) -> dict[str, ZooEntry]:
    """ZooEntry per model id; trains what is missing (``parallel`` trains several at once,
    else one after another on ``device``).

    In this process a CPU model trains with ``threads`` intra-op threads, the count a Ray
    training task gets (``cluster.cpus_per_actor``): which path trains a model (a task, the
    driver when one model is missing, ``--local``, ``farm zoo``) must not change its weights."""
    missing: dict[str, tuple[ModelSpec, DatasetSpec]] = {}
    for spec, ds in items:
        if not is_cached(spec, ds, zoo_dir):
            missing.setdefault(zoo_key(spec, ds), (spec, ds))
    if parallel is not None and len(missing) > 1:
        log(f"zoo: training {len(missing)} model(s) in parallel into {zoo_dir}")
        parallel(list(missing.values()), zoo_dir, log)
    entries = {spec.id: ensure_model(spec, ds, zoo_dir, log, device, threads) for spec, ds in items}
    write_manifest(zoo_dir)  # clean accuracy and ASR of every cached model, for humans and tables
    return entries


def check_nodes_see(folder: Path, log: Callable[[str], None]) -> None:
    """Fail unless every alive Ray node with CPUs reads a probe file the driver wrote into
    ``folder`` and can write its own there (one task pinned to each node)."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from farm.errors import RunError

    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    if len(nodes) < 2 and all(n["NodeID"] == ray.get_runtime_context().get_node_id() for n in nodes):
        return  # the driver's own node only: the folder is the driver's
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    probe = folder / f".farm-probe-{token}"
    probe.write_text(token)

    @ray.remote(num_cpus=0)
    def _sees(path: str, expect: str) -> str | None:
        p = Path(path)
        try:
            if p.read_text() != expect:
                return "holds another file of that name"
            mine = p.with_name(p.name + "-" + uuid.uuid4().hex)
            mine.write_text(expect)
            mine.unlink()
        except OSError as exc:
            return f"{type(exc).__name__}: {exc.strerror or exc}"
        return None

    try:
        refs = {n["NodeManagerAddress"] + f" ({n['NodeID'][:8]})": _sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(probe), token)
            for n in nodes}
        problems = {node: err for node, err in zip(refs, ray.get(list(refs.values()), timeout=120)) if err}
    finally:
        probe.unlink(missing_ok=True)
    if problems:
        lines = "; ".join(f"node {node}: {err}" for node, err in problems.items())
        raise RunError(f"run.zoo_dir {folder} is not the same folder on every Ray node ({lines}). Zoo models "
                       "train on any node and the driver reads them back: set run.zoo_dir to storage every node "
                       "mounts (NFS/EFS), or train the zoo first where that folder is (`farm zoo CONFIG` on the head, "
                       "without --address) so no worker needs it")
    log(f"zoo: {len(nodes)} Ray node(s) see {folder}")


def ray_trainer(cpus: float) -> Trainer:
    """A :data:`Trainer` that runs one Ray task per model, each with ``cpus`` CPUs."""

    def train(items: Items, zoo_dir: Path, log: Callable[[str], None]) -> None:
        import ray

        @ray.remote(num_cpus=cpus, max_retries=1)
        def _train(spec: ModelSpec, ds: DatasetSpec, folder: str, threads: int) -> str:
            entry = ensure_model(spec, ds, Path(folder), lambda msg: print(f"[{spec.id}] {msg}", flush=True),
                                 threads=threads)
            return entry.key

        check_nodes_see(zoo_dir, log)
        threads = config_threads(cpus)
        ray.get([_train.remote(spec, ds, str(zoo_dir), threads) for spec, ds in items])

    return train
