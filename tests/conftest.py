"""Shared fixtures: a real redis-server per test (a real 3-master cluster for the ``cluster``
run of the suites marked ``cluster_too``), the environment pointing at it, worker processes."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
import redis

from core.config import reload_settings
from core.fallback import executor
from core.platform.connection import reset_connections
from core.queue.task_registry import load_task_modules
from tests.cluster_servers import ThreeMasterCluster
from tests.servers import TAG, RedisServer, WorkerProcess, worker_env

TEST_ENV_KEYS = (
    "REDIS_URL", "JOBS_WORKER_TTL", "JOBS_WORKER_MAINTENANCE_INTERVAL", "JOBS_WORKER_HEARTBEAT_INTERVAL",
    "JOBS_WORKER_HEARTBEAT_GRACE", "JOBS_RETRY_BACKOFF_BASE", "JOBS_TASK_MODULES", "JOBS_FALLBACK_LEASE",
)


def _reset_process_state() -> None:
    reload_settings()
    reset_connections()
    if executor._executor is not None:
        executor._executor.shutdown(wait=False)
    executor._executor = None


@pytest.fixture
def redis_mode(request: pytest.FixtureRequest) -> str:
    """``standalone``, or ``cluster`` for a module marked ``cluster_too`` (it runs in both)."""
    return getattr(request, "param", "standalone")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The suites marked ``cluster_too`` run twice: on a standalone redis-server and on a real
    3-master Redis Cluster with REDIS_CLUSTER=1 (issue 25: parametrized, not copied)."""
    if "redis_mode" in metafunc.fixturenames and metafunc.definition.get_closest_marker("cluster_too"):
        metafunc.parametrize("redis_mode", ["standalone", "cluster"], indirect=True)


class _ClusterSpare:
    """The next cluster test's ThreeMasterCluster, started in a thread while the tests before it
    run: a cluster node serves no key before ~2 s after its start (Redis's writable delay), and
    paying that in every cluster test's setup was a third of the cluster run's wall time. Each test
    still gets a cluster of its own, new and empty; the spare is only started ahead of time."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._result: list[ThreeMasterCluster | BaseException] = []

    def prepare(self) -> None:
        if self._thread is not None:
            return
        result: list[ThreeMasterCluster | BaseException] = []

        def start() -> None:
            cluster = ThreeMasterCluster()
            try:
                result.append(cluster.start())
            except BaseException as exc:  # handed to the test that takes it
                cluster.cleanup()
                result.append(exc)

        self._result = result
        self._thread = threading.Thread(target=start, name="cluster-spare", daemon=True)
        self._thread.start()

    def take(self) -> ThreeMasterCluster:
        self.prepare()
        assert self._thread is not None
        self._thread.join()
        self._thread, (got,) = None, self._result
        if isinstance(got, BaseException):
            raise got
        assert got.healthy(), "the spare cluster, started ahead, no longer reports cluster_state:ok on every node"
        return got

    def close(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if isinstance(got := self._result[0], ThreeMasterCluster):
                got.cleanup()


_spare = _ClusterSpare()


def pytest_sessionfinish(session: pytest.Session) -> None:
    _spare.close()


def _cluster_test_soon(request: pytest.FixtureRequest, within: int = 3) -> bool:
    """Whether one of the next ``within`` tests runs in cluster mode (each test of a ``cluster_too``
    module runs standalone, then cluster)."""
    items = request.session.items
    try:
        here = items.index(request.node)
    except ValueError:
        return False
    return any(getattr(item, "callspec", None) is not None and item.callspec.params.get("redis_mode") == "cluster"
               for item in items[here + 1:here + 1 + within])


@pytest.fixture
def redis_server(redis_mode: str, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """The test's own Redis: a standalone redis-server, or in cluster mode a 3-master cluster
    (tests/cluster_servers.py ThreeMasterCluster: ``url`` names a node that is not the ``{fikiri}``
    slot's master, ``client()``/``stop()``/``start()`` act on that master). A cluster is started
    ahead, while the tests before run, whenever a cluster test is among the next three
    (:class:`_ClusterSpare`); each cluster test gets a new one."""
    server = _spare.take() if redis_mode == "cluster" else RedisServer().start()
    if _cluster_test_soon(request):
        _spare.prepare()
    yield server
    server.cleanup()


def _untagged_keys(server: ThreeMasterCluster) -> list[str]:
    """Keys on any running master of the cluster without the hash tag, ours and the tests' own
    alike (tests/servers.py ``tkey``): a key without it lives on another master, where a script or
    a client pinned to our slot cannot reach it. A master the test stopped cannot be asked."""
    try:
        names = server.all_keys()
    except (OSError, redis.RedisError) as exc:
        pytest.fail(f"cluster mode: could not list the keys of every running master: {exc}")
    return [n for n in names if not n.startswith(f"{TAG}:")]


@pytest.fixture
def jobs_env(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, tmp_path,
             request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """Point this process's settings at the test's own Redis (same settings the workers get),
    and at a SQLite file of its own for any task that touches the database.

    A job that went to the in-process fallback in a test not marked ``fallback`` fails the test:
    a fallback job ends ``completed`` too, so without this a broken Redis path (a missing script
    file once counted as "Redis down") passed every test that only waited for ``completed``.

    In cluster mode (REDIS_CLUSTER=1 here and in every worker) the test fails if any running
    master holds a key without the ``{fikiri}`` tag, the tests' own keys included."""
    env = worker_env(redis_server.url)
    for key in TEST_ENV_KEYS:
        monkeypatch.setenv(key, env[key])
    cluster = isinstance(redis_server, ThreeMasterCluster)
    if cluster:
        monkeypatch.setenv("REDIS_CLUSTER", "1")  # this process, and every worker it starts
    else:
        monkeypatch.delenv("REDIS_CLUSTER", raising=False)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'jobs.db'}")
    spool = tmp_path / "fallback-spool.db"
    monkeypatch.setenv("JOBS_FALLBACK_SPOOL", str(spool))  # the test's own spool
    _reset_process_state()
    load_task_modules()
    yield redis_server
    _reset_process_state()
    if cluster and (untagged := _untagged_keys(redis_server)):
        pytest.fail(f"cluster mode: keys without the {TAG} tag: {sorted(untagged)[:10]}")
    if spool.exists() and request.node.get_closest_marker("fallback") is None:
        pytest.fail(f"a job went to the in-process fallback ({spool} exists) in a test that means Redis; "
                    f"mark the test @pytest.mark.fallback if it means the fallback")


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


@pytest.fixture
def start_worker_factory(tmp_path) -> Iterator:
    """Like start_worker, for a Redis the test manages itself: ``start(redis_url, *args)``."""
    started: list[WorkerProcess] = []

    def start(redis_url: str, *args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(redis_url, list(args), env=env, log_path=tmp_path / f"worker-f{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


ADMIN_TOKEN = "test-admin-token-0123456789"
SECRET_KEY = "test-secret-key-for-user-tokens"


@pytest.fixture
def setting(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Factory: ``setting("JOBS_MAX_DEFERRALS", "2")`` sets it for this process's settings; every
    variable is restored and the settings reloaded after the test, so none leaks into the next."""
    def set_one(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        reload_settings()

    yield set_one
    monkeypatch.undo()
    reload_settings()


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


POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _postgres_reachable() -> bool:
    import sqlalchemy as sa

    try:
        with sa.create_engine(POSTGRES_URL).connect() as connection:
            connection.execute(sa.text("select 1"))
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    """A fresh database per test: a SQLite file, or a throwaway schema in the local PostgreSQL."""
    import uuid

    import sqlalchemy as sa

    from core.platform.db import dispose_engines

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fikiri.db'}"
        dispose_engines()
        return
    if not _postgres_reachable():
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_URL}; the SQLite run covers the same code")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    dispose_engines()
    with admin.begin() as connection:
        connection.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def domain_env(jobs_env, database_url, monkeypatch):
    """jobs_env plus a database; worker processes inherit DATABASE_URL from this process's environment."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    reload_settings()
    return jobs_env


@pytest.fixture
def fake_gmail(monkeypatch):
    from email_automation.fake_gmail import FakeGmail

    server = FakeGmail.start(messages=0)
    monkeypatch.setenv("GMAIL_API_BASE_URL", server.base_url)
    monkeypatch.setenv("GMAIL_TOKEN_URL", server.token_url)
    monkeypatch.setenv("GMAIL_PAGE_SIZE", "10")
    reload_settings()
    yield server
    server.stop()


def finished(job_id: str, timeout: float = 30):
    """Wait until the job has ended; returns it."""
    from core.api.jobs import get_job
    from tests.servers import wait_until

    return wait_until(lambda: (j := get_job(job_id)) and j.status.is_final and j, timeout=timeout)


@pytest.fixture
def smtp(monkeypatch):
    """A loopback SMTP peer the settings point at (no STARTTLS)."""
    from tests.peers import SmtpPeer

    peer = SmtpPeer().start()
    monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("SMTP_PORT", str(peer.port))
    monkeypatch.setenv("SMTP_STARTTLS", "0")
    reload_settings()
    yield peer
    peer.stop()
