"""How farm's own local Ray is exposed, and cleaning up after a killed driver (docs/security.md).

Ray's core servers (GCS, raylet, workers) listen on every interface whatever the node
address (Ray 2.60 has no bind setting for them), so the protection of a local run is:

* **token auth, explicitly**: ``RAY_AUTH_MODE=token`` with a random per-process token in
  ``RAY_AUTH_TOKEN`` (inherited by every Ray process of the run, written to no file), so every
  gRPC and HTTP entry point refuses callers without it. ``RAY_AUTH_MODE=disabled`` in the
  environment is refused unless the config says ``cluster.ray_auth: disabled``.
* **metrics off**: ``RAY_enable_metrics_collection=0`` unless the user set it, so no
  unauthenticated Prometheus endpoint is opened.
* **orphans**: every process of a local Ray carries ``FARM_RAY_DRIVER=<pid>:<start time>`` of
  the driver that started it. A driver killed by SIGKILL cannot stop its Ray; the next farm
  command that starts a local Ray ends the processes whose driver is gone (same user only).
"""
from __future__ import annotations

import os
import secrets
from typing import Callable

from farm.errors import RunError

DRIVER_ENV = "FARM_RAY_DRIVER"
AUTH_MODES = ("token", "disabled")


def harden_local_env(ray_auth: str) -> None:
    """Set the environment a local Ray inherits: auth mode and token, metrics off, driver tag."""
    import psutil

    from ray._raylet import AuthenticationTokenLoader, Config

    check_auth_env(ray_auth)
    os.environ["RAY_AUTH_MODE"] = ray_auth
    if ray_auth == "token" and not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    os.environ.setdefault("RAY_enable_metrics_collection", "0")
    # Ray read its config and token when imported; re-read them as Ray's own
    # enable_token_auth_by_default does, so this process uses what its Ray processes inherit.
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
    me = psutil.Process()
    os.environ[DRIVER_ENV] = f"{me.pid}:{me.create_time():.3f}"


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
