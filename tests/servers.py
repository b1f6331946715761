"""Real servers for tests: a redis-server we own (so a test can kill and restart it) and
worker processes started from scripts/rq_worker.py. Never mocks."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
TAG = "{fikiri}"  # the cluster hash tag of every key (core/platform/keys.py cluster_tag, default prefix)


def tkey(name: str) -> str:
    """A key of the test's own, under the cluster hash tag: ``tkey("done") == "{fikiri}:test:done"``.

    On a real cluster a key without the tag hashes to some other master, and a client pinned to our
    slot's master gets ``MOVED`` for it (README: a task that writes its own keys on the cluster must
    put ``{fikiri}`` in them too). The suites that run in both modes use it in both, as a user
    would. (Not named ``test_key``: pytest would collect it as a test wherever it is imported.)"""
    return f"{TAG}:test:{name}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05, message: str = "") -> object:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


class RedisServer:
    """A redis-server process on a free port, with its own data directory."""

    def __init__(self, appendonly: bool = False, appendfsync: str = "always") -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fikiri-redis-")
        self.appendonly = appendonly
        self.appendfsync = appendfsync  # "everysec" for the fault campaign (bench/chaos.py)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (.ci/run installs it)"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--dir", self.dir, "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", self.appendfsync, "--loglevel", "warning"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        wait_until(lambda: self._ping(client), timeout=10, message=f"redis-server on {self.port}")
        client.close()
        return self

    @staticmethod
    def _ping(client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop(signal.SIGTERM if self.appendonly else signal.SIGKILL)
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def worker_env(redis_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a worker process: our Redis, fast recovery settings, test task module."""
    env = dict(os.environ)
    env.update({
        "REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
        "JOBS_WORKER_TTL": "20",
        "JOBS_WORKER_MAINTENANCE_INTERVAL": "2",
        "JOBS_WORKER_HEARTBEAT_INTERVAL": "1",
        "JOBS_WORKER_HEARTBEAT_GRACE": "2",
        "JOBS_RETRY_BACKOFF_BASE": "1",
        "JOBS_TASK_MODULES": "tests.task_fixtures",
        "JOBS_FALLBACK_LEASE": "2",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra or {})
    return env


def point_this_process_at(server: RedisServer, monkeypatch: object) -> None:
    """Settings of this test process for a Redis the test manages itself (like the workers')."""
    from core.config import reload_settings
    from core.platform.connection import reset_connections

    env = worker_env(server.url)
    for key in ("REDIS_URL", "JOBS_TASK_MODULES", "JOBS_RETRY_BACKOFF_BASE"):
        monkeypatch.setenv(key, env[key])  # type: ignore[attr-defined]
    reload_settings()
    reset_connections()


class WorkerProcess:
    """``scripts/rq_worker.py`` in its own session, so the test can signal it and its work-horse."""

    def __init__(self, redis_url: str, args: list[str] | None = None, env: dict[str, str] | None = None,
                 log_path: Path | None = None) -> None:
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="fikiri-worker-", suffix=".log")[1])
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "rq_worker.py"), *(args or [])],
            env=worker_env(redis_url, env), cwd=str(ROOT), stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def children(self) -> list[int]:
        """Child pids (the work-horse runs in its own process group, so killpg misses it)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill_hard(self) -> None:
        """SIGKILL the worker and every process it started (work-horse, scheduler)."""
        pids = self.children()
        for pid in [self.pid, *pids]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill_hard()
        for pid in self.children():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._log.close()


def wait_spooled(proc: subprocess.Popen) -> None:
    """Read a spooling process's output until it prints 'spooled' (its jobs are in the spool);
    fail with what it printed if it exits first."""
    seen = []
    for line in proc.stdout:
        if line.strip() == "spooled":
            return
        seen.append(line)
    raise AssertionError(f"the spooling process exited with {proc.wait()}; it printed:\n{''.join(seen)[-3000:]}")
