"""How farm's own local Ray is exposed, and cleaning up after a killed driver (docs/security.md).

A local run is guarded in four ways:

* **loopback only**: Ray turns a node address of 127.0.0.1 into the host's outward address
  unless it runs in its single-host mode (``ray_constants.ENABLE_RAY_CLUSTER`` false, which
  is also what ``ray.cluster_utils.Cluster`` tests use). :func:`single_host` switches that
  mode on for ``ray.init`` only, so the GCS, raylet, workers and agents all listen on
  127.0.0.1 and nothing outside the machine can reach them.
* **token auth, explicitly**: ``RAY_AUTH_MODE=token`` with a random per-process token in
  ``RAY_AUTH_TOKEN`` (inherited by every Ray process of the run, written to no file), so every
  gRPC and HTTP entry point refuses callers without it. ``RAY_AUTH_MODE=disabled`` in the
  environment is refused unless the config says ``cluster.ray_auth: disabled``.
* **metrics off**: ``RAY_enable_metrics_collection=0`` unless the user set it, so the node
  metrics agent exports nothing (the dashboard head's and autoscaler's exporters cannot be
  switched off in Ray 2.60; single-host mode keeps them on loopback, docs/security.md).
* **orphans**: every process of a local Ray carries ``FARM_RAY_DRIVER=<pid>:<start time>`` of
  the driver that started it. A driver killed by SIGKILL cannot stop its Ray; the next farm
  command that starts a local Ray ends the processes whose driver is gone (same user only).
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Callable

from farm.errors import RunError

DRIVER_ENV = "FARM_RAY_DRIVER"
AUTH_MODES = ("token", "disabled")


def harden_local_env(ray_auth: str) -> None:
    """Set the environment a local Ray inherits: auth mode and token, metrics off, driver tag."""
    import psutil

    from ray._raylet import AuthenticationTokenLoader, Config

    os.environ["RAY_AUTH_MODE"] = ray_auth  # farm.cluster.connect has refused a disabling environment
    if ray_auth == "token" and not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ.setdefault("RAY_enable_metrics_collection", "0")
    # Ray read its config and token when imported; re-read them as Ray's own
    # enable_token_auth_by_default does, so this process uses what its Ray processes inherit.
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    me = psutil.Process()
    os.environ[DRIVER_ENV] = f"{me.pid}:{me.create_time():.3f}"


@contextmanager
def single_host() -> Iterator[None]:
    """Ray's single-host mode around a local ``ray.init``: node address 127.0.0.1 stays loopback
    (for this process and, through the environment, the Ray processes it starts)."""
    from ray._private import ray_constants

    before_const, before_env = ray_constants.ENABLE_RAY_CLUSTER, os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before_const
        if before_env is None:
            os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
        else:
            os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = before_env


def check_auth_env(ray_auth: str) -> None:
    """Refuse ``RAY_AUTH_MODE=disabled`` unless the config asked for an unauthenticated Ray."""
    env = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    if env == "disabled" and ray_auth != "disabled":
        raise RunError("RAY_AUTH_MODE=disabled would let anyone who reaches this machine's Ray ports run code as "
                       "you; unset it (farm uses token auth), or set cluster.ray_auth: disabled if the network is "
                       "trusted")


def _driver_alive(tag: str) -> bool:
    import psutil

    pid, _, started = tag.partition(":")
    try:
        proc = psutil.Process(int(pid))
        return abs(proc.create_time() - float(started)) < 0.01
    except (ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def reap_orphans(log_fn: Callable[[str], None], grace_s: float = 5.0) -> list[int]:
    """End this user's Ray processes left by a farm driver that no longer runs; their pids."""
    import psutil

    orphans = []
    for proc in psutil.process_iter(["uids"]):
        try:
            if proc.pid == os.getpid() or proc.info["uids"] is None or proc.info["uids"].real != os.getuid():
                continue
            tag = proc.environ().get(DRIVER_ENV)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if tag and tag != os.environ.get(DRIVER_ENV) and not _driver_alive(tag):
            orphans.append(proc)
    if not orphans:
        return []
    log_fn(f"ray: ending {len(orphans)} process(es) left by an earlier farm run whose driver was killed")
    for proc in orphans:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(orphans, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)
    return [p.pid for p in orphans]
