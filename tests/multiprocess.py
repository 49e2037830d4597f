"""Run a script as several local JAX processes: the multi-host path on one machine.

:func:`launch` starts ``num_processes`` Python processes that find each other
through ``jax.distributed`` on the loopback address (a free port), each with
``devices`` CPU devices; XLA:CPU's collectives between them go over gloo
(jax's default CPU collectives). The script calls :func:`start_worker` first.
With ``num_processes=1`` the same script runs as one ordinary process with
``devices`` CPU devices (no ``jax.distributed``): the reference to compare with.

Every process runs under ``timeout --kill-after``: in distributed mode JAX
catches SIGTERM and waits at its shutdown barrier, so a process stuck in a
collective that its peer never entered would otherwise hang the test run.

The worker reads its rank from ``JC_MP_*`` environment variables::

    import multiprocess                 # this module (tests/ is on PYTHONPATH)
    multiprocess.start_worker()         # before any other JAX call
    import jaxopt_core as jc
    ...
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (a small race: it is
    free when we look; the coordinator binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script: str, *, num_processes: int = 2, devices: int = 2, timeout: float = 120,
           env: dict | None = None) -> list[subprocess.Popen]:
    """Start ``script`` (Python source) as ``num_processes`` processes of
    ``devices`` CPU devices each; returns the started processes (stdout and
    stderr piped, text). Wait for them with :func:`wait_all`."""
    port = free_port()
    base = dict(os.environ, JAX_PLATFORMS="cpu", **(env or {}))
    base["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), str(ROOT),
                                          base.get("PYTHONPATH", "")])
    base.pop("XLA_FLAGS", None)  # the device count comes from jax_num_cpu_devices
    procs = []
    for rank in range(num_processes):
        rank_env = dict(base, JC_MP_RANK=str(rank), JC_MP_SIZE=str(num_processes),
                        JC_MP_DEVICES=str(devices), JC_MP_PORT=str(port))
        cmd = ["timeout", "--kill-after=10", str(int(timeout)), sys.executable, "-c", script]
        procs.append(subprocess.Popen(cmd, env=rank_env, cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs


def wait_all(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    """``(returncode, stdout, stderr)`` of each process, once all have ended
    (each ends by its own ``timeout`` at the latest)."""
    outputs = [p.communicate() for p in procs]
    return [(p.returncode, *o) for p, o in zip(procs, outputs)]


def start_worker() -> tuple[int, int]:
    """Set up JAX in a process started by :func:`launch`: its CPU device
    count and, with several processes, ``jax.distributed``. Returns
    ``(rank, number of processes)``."""
    import jax

    rank, size = int(os.environ["JC_MP_RANK"]), int(os.environ["JC_MP_SIZE"])
    jax.config.update("jax_num_cpu_devices", int(os.environ["JC_MP_DEVICES"]))
    if size > 1:
        address = f"127.0.0.1:{os.environ['JC_MP_PORT']}"
        # Short timeouts: a peer that died should fail the run in seconds, not minutes.
        jax.distributed.initialize(
            coordinator_address=address, coordinator_bind_address=address,
            num_processes=size, process_id=rank, initialization_timeout=60,
            heartbeat_timeout_seconds=20, shutdown_timeout_seconds=20,
        )
    return rank, size
