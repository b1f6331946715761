"""A redis-server of our own per measurement, and what it can tell us about a system's cost.

Every system gets a fresh server on a free port, so one system's leftovers never show up in
another's counts. Only the process started here is ever stopped.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

# What the harness itself sends while counting; never charged to the system measured.
HARNESS_COMMANDS = {"info", "config|resetstat", "config", "ping"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Usage:
    """Redis work between ``reset()`` and ``usage()``: command calls and client reads (round trips)."""

    calls: int
    reads: int
    by_command: dict[str, int]


class FreshRedis:
    """``redis-server`` on a free port with no persistence, in a temporary directory."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server is not installed")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir), "--loglevel", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port)
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def reset(self) -> None:
        """CONFIG RESETSTAT: zero commandstats and the read counter."""
        self.client.config_resetstat()

    def usage(self) -> Usage:
        """Command calls (commandstats counts the calls made inside Lua scripts too) and reads.

        ``total_reads_processed`` counts the server's reads from client sockets: one per request
        or pipeline that arrives in one piece, so it approximates round trips.
        """
        with self.client.pipeline(transaction=False) as pipe:
            pipe.info("commandstats")
            pipe.info("stats")
            commandstats, stats = pipe.execute()
        by_command = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in commandstats.items()}
        charged = {k: v for k, v in by_command.items() if k not in HARNESS_COMMANDS}
        return Usage(calls=sum(charged.values()), reads=max(0, int(stats["total_reads_processed"]) - 1),
                     by_command=charged)

    def used_memory(self) -> int:
        """Bytes of data (MEMORY STATS ``dataset.bytes``): ``used_memory`` minus overheads such as
        client query buffers, which keep the last bulk request's size and are freed lazily, so a
        system that sends jobs in large requests would otherwise look bigger per job than it is."""
        return int(self.client.memory_stats()["dataset.bytes"])

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)
