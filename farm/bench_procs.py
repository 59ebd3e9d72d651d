"""``farm bench --processes N``: time the farm's configurations as N actors on one machine.

Issue #11 states its speed goals "whole machine both": the farm on every core against the
paper's one-pair script on every core. The farm spends a machine's cores as single-threaded
actors (``cluster.cpus_per_actor: 1``), while a paper's script is one process whose torch uses
all cores as intra-op threads. ``farm bench`` times in one process, which measures one actor;
this module runs the same configurations in N spawned processes at once, each with its share
of the threads, and reports their combined rate, so the baseline (in the parent, all threads)
and the farm are each measured the way each would use the machine.

Shards are dealt to processes as the driver deals them to actors (shards of P pairs,
round-robin), so P = the number of pairs leaves all but one process idle, as it would leave
all but one actor idle. Only ``torch`` and the farm: no Ray, no MLflow.
"""
from __future__ import annotations

import multiprocessing as mp
import time
import traceback
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import torch

from farm.config import Config, MethodSpec
from farm.grid import Pair
from farm.inprocess import make_executor, run_shards
from farm.prepare import prepare_models


def deal(pairs: list[Pair], pairs_per_batch: int, processes: int) -> list[list[Pair]]:
    """Each process's pairs: shards of ``pairs_per_batch`` dealt round-robin, in order."""
    shards = [pairs[i:i + pairs_per_batch] for i in range(0, len(pairs), pairs_per_batch)]
    return [[p for shard in shards[k::processes] for p in shard] for k in range(processes)]


def _serve(conn: Connection, cfg: Config, model_ids: list[str], threads: int, device: str) -> None:
    """A timing process: load the models (the parent trained them), then build executors and run
    shards on request, replying with times and the pairs it ran."""
    try:
        torch.set_num_threads(threads)
        models = prepare_models(replace(cfg, models=[m for m in cfg.models if m.id in model_ids]), lambda _m: None)
        conn.send(("up",))
        job = None
        while True:
            msg = conn.recv()
            if msg[0] == "setup":
                _, model_id, spec, pairs = msg
                job = (make_executor(cfg, models[model_id], spec, pairs, device=device), models[model_id], spec)
                conn.send(("ready",))
            elif msg[0] == "run" and job is not None:
                _, pairs_per_batch, pairs = msg
                start = time.perf_counter()
                rows = run_shards(cfg, *job, pairs, pairs_per_batch) if pairs else []
                conn.send(("done", sum(r["wall_s"] for r in rows), time.perf_counter() - start,
                           [(r["victim"], r["target"]) for r in rows]))
            else:
                return
    except Exception:  # reported by the parent, with this process's traceback
        conn.send(("error", traceback.format_exc()))


class ProcessGroup:
    """N timing processes (spawned: fresh interpreters, like Ray's workers), one pipe each."""

    def __init__(self, cfg: Config, model_ids: list[str], processes: int, threads: int, device: str):
        ctx = mp.get_context("spawn")
        self.threads = threads
        self.conns: list[Connection] = []
        self.procs = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, cfg, model_ids, threads, device), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        self._all("up")

    def _all(self, expect: str) -> list[tuple[Any, ...]]:
        replies = []
        for k, conn in enumerate(self.conns):
            try:
                msg = conn.recv()
            except EOFError:  # killed (out of memory, a signal) before it could say why
                self.procs[k].join(timeout=5)
                msg = ("exited", f"it exited with code {self.procs[k].exitcode} without a reply")
            if msg[0] != expect:
                raise RuntimeError(f"farm bench: timing process {k + 1} of {len(self.conns)} failed:\n{msg[-1]}")
            replies.append(msg)
        return replies

    def setup(self, model_id: str, spec: MethodSpec, pairs: list[Pair]) -> None:
        """Every process builds the executor of this job over all ``pairs`` (images loaded once)."""
        for conn in self.conns:
            conn.send(("setup", model_id, spec, pairs))
        self._all("ready")

    def run(self, pairs: list[Pair], pairs_per_batch: int) -> tuple[float, float]:
        """(optimisation seconds, wall seconds) of ``pairs`` run by all processes at once.

        Optimisation time is the longest process's own: the processes run concurrently, so the
        machine is done optimising when the last of them is."""
        shares = deal(pairs, pairs_per_batch, len(self.conns))
        start = time.perf_counter()
        for conn, share in zip(self.conns, shares):
            conn.send(("run", pairs_per_batch, share))
        replies = self._all("done")
        wall = time.perf_counter() - start
        ran = sorted(p for r in replies for p in r[3])
        if ran != sorted((p.victim, p.target) for p in pairs):
            raise RuntimeError(f"farm bench: the processes ran {len(ran)} pairs, not the {len(pairs)} dealt")
        return max(r[1] for r in replies), wall

    def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
