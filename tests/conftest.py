"""Shared fixtures: a real redis-server per test, the environment pointing at it, worker processes."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from core import fallback
from core.config import reload_settings
from core.connection import reset_connections
from core.task_registry import load_task_modules
from tests.servers import RedisServer, WorkerProcess, worker_env

TEST_ENV_KEYS = (
    "REDIS_URL", "JOBS_WORKER_TTL", "JOBS_WORKER_MAINTENANCE_INTERVAL", "JOBS_WORKER_HEARTBEAT_INTERVAL",
    "JOBS_WORKER_HEARTBEAT_GRACE", "JOBS_RETRY_BACKOFF_BASE", "JOBS_TASK_MODULES",
)


def _reset_process_state() -> None:
    reload_settings()
    reset_connections()
    if fallback._executor is not None:
        fallback._executor.shutdown(wait=False)
    fallback._executor = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def jobs_env(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """Point this process's settings at the test's own Redis (same settings the workers get)."""
    env = worker_env(redis_server.url)
    for key in TEST_ENV_KEYS:
        monkeypatch.setenv(key, env[key])
    _reset_process_state()
    load_task_modules()
    yield redis_server
    _reset_process_state()


@pytest.fixture
def start_worker(jobs_env: RedisServer, tmp_path) -> Iterator:
    """Factory: ``start_worker("email", "--worker-class", "simple", env={...})``; stopped at teardown."""
    started: list[WorkerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        log_path = tmp_path / f"worker-{len(started)}.log"
        worker = WorkerProcess(jobs_env.url, list(args), env=env, log_path=log_path)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    if os.environ.get("FIKIRI_SHOW_WORKER_LOGS"):
        for worker in started:
            print(worker.log())


ADMIN_TOKEN = "test-admin-token-0123456789"
SECRET_KEY = "test-secret-key-for-user-tokens"


@pytest.fixture
def api_env(jobs_env: RedisServer, monkeypatch: pytest.MonkeyPatch) -> RedisServer:
    """jobs_env plus an admin token and a secret key, as a production API would have."""
    monkeypatch.setenv("JOBS_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("SECRET_KEY", SECRET_KEY)
    monkeypatch.delenv("JOBS_INSECURE_DEV", raising=False)
    reload_settings()
    return jobs_env


@pytest.fixture
def client(api_env: RedisServer):
    """Flask's test client on create_app()."""
    from app import create_app

    return create_app().test_client()


@pytest.fixture
def api_server(api_env: RedisServer, tmp_path) -> Iterator:
    """gunicorn serving create_app() on loopback, with the same settings as this process."""
    from tests.api_server import ApiServer

    server = ApiServer(api_env.url, {"JOBS_ADMIN_TOKEN": ADMIN_TOKEN, "SECRET_KEY": SECRET_KEY},
                       tmp_path / "gunicorn.log")
    yield server
    server.stop()
