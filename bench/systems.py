"""The five systems under test behind one small interface: start workers, send jobs, see results.

``Ours`` drives only the public CLI (``scripts/rq_worker.py``) and the public queue API, so it keeps
working while core/ is rewritten. Peers are driven through their own client APIs and CLIs.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PAYLOAD_100B = {"body": "x" * 92}  # 100 bytes of JSON, the payload of the memory test


class System(ABC):
    """One system in one worker configuration."""

    family: str = ""

    def __init__(self, config: str) -> None:
        self.config = config

    @property
    def label(self) -> str:
        return f"{self.family} {self.config}".strip()

    @abstractmethod
    def worker_argv(self, url: str) -> list[str]:
        """The command that starts this configuration's workers against ``url``."""

    @abstractmethod
    def connect(self, url: str) -> None:
        """Point this process's client at ``url`` (a fresh server each time)."""

    @abstractmethod
    def send(self, task: str, i: int, payload: dict[str, Any] | None = None) -> Any:
        """Enqueue ``task(i, **payload)`` one job at a time; return a handle for ``ready``."""

    def send_bulk(self, task: str, ids: range, payload: dict[str, Any] | None = None) -> bool:
        """Enqueue many at once with the system's bulk API; False (after sending one by one) if it has none."""
        for i in ids:
            self.send(task, i, payload)
        return False

    @abstractmethod
    def ready(self, handle: Any) -> bool:
        """Has the job behind ``handle`` finished, as this system's client sees it?"""

    def disconnect(self) -> None:  # noqa: B027 - optional hook, most clients need nothing
        """Drop client connections before the server goes away."""


# --- ours ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OurConfig:
    """``"simple x2"``, ``"threaded 2x4"``, ``"prefork 2"``: worker class, processes, concurrency."""

    worker_class: str
    processes: int
    concurrency: int | None
    prefetch: int | None = None

    @classmethod
    def parse(cls, text: str) -> OurConfig:
        if text.strip() in ("default", "default-before"):  # `fikiri-worker` with no flags and no queue names
            return cls(text.strip(), 1, None)
        match = re.fullmatch(r"\s*([a-z_-]+)\s*(?:x?(\d+))?(?:\s*x\s*(\d+))?(?:\s+prefetch\s+(\d+))?\s*", text)
        if not match:
            raise ValueError(f"not a worker config: {text!r} (expected e.g. 'simple x2', 'threaded 2x4', "
                             f"'prefork 1x2', 'simple x2 prefetch 10')")
        kind, procs, threads, prefetch = match.groups()
        return cls(kind, int(procs or 1), int(threads) if threads else None, int(prefetch) if prefetch else None)

    def cli_args(self) -> list[str]:
        if self.worker_class.startswith("default"):
            return []
        args = ["--worker-class", self.worker_class, "--processes", str(self.processes)]
        args += ["--concurrency", str(self.concurrency)] if self.concurrency else []
        return args + (["--prefetch", str(self.prefetch)] if self.prefetch else [])


class Ours(System):
    """Fikiri Jobs: workers from ``scripts/rq_worker.py``, jobs through the queue API."""

    family = "ours"
    NAMES = {"noop": "noop", "sleep": "sleep_100ms", "noop_result": "noop_result"}

    def __init__(self, config: str) -> None:
        super().__init__(config)
        self.parsed = OurConfig.parse(config)
        self.queue: Any = None

    def worker_argv(self, url: str) -> list[str]:
        if self.parsed.worker_class == "default":  # exactly what a user who types `fikiri-worker` runs
            return [sys.executable, str(ROOT / "scripts" / "rq_worker.py")]
        if self.parsed.worker_class == "default-before":  # the same from another checkout (a before/after run)
            before = os.environ.get("FIKIRI_BENCH_BEFORE_ROOT")
            if not before:
                raise ValueError("'default-before' needs FIKIRI_BENCH_BEFORE_ROOT: a checkout of the commit to compare")
            return [sys.executable, str(Path(before) / "scripts" / "rq_worker.py")]
        return [sys.executable, str(ROOT / "scripts" / "rq_worker.py"), "email", *self.parsed.cli_args()]

    def connect(self, url: str) -> None:
        os.environ.update({"REDIS_URL": url, "JOBS_TASK_MODULES": "bench.our_tasks"})
        import bench.our_tasks  # noqa: F401 - registers the tasks
        from core.api.queues import email_queue
        from core.config import reload_settings
        from core.platform.connection import reset_connections

        reload_settings()
        reset_connections()
        self.queue = email_queue

    def send(self, task: str, i: int, payload: dict[str, Any] | None = None) -> Any:
        return self.queue.enqueue_job(self.NAMES[task], {"i": i, **(payload or {})})

    def send_bulk(self, task: str, ids: range, payload: dict[str, Any] | None = None) -> bool:
        self.queue.enqueue_many(self.NAMES[task], [{"i": i, **(payload or {})} for i in ids])
        return True

    def ready(self, handle: Any) -> bool:
        from core.api.jobs import get_job

        job = get_job(handle)
        return job is not None and job.status.value == "completed"


# --- raw RQ ----------------------------------------------------------------------------------------
class RawRQ(System):
    """RQ 3 as it comes, JSON serializer; ``pool`` = ``rq worker-pool -n 2 -w SimpleWorker``."""

    family = "raw RQ"
    FUNCS = {"noop": "bench.raw_tasks.noop", "sleep": "bench.raw_tasks.sleep_io",
             "noop_result": "bench.raw_tasks.noop_result"}

    def __init__(self, config: str = "pool -n 2 SimpleWorker") -> None:
        super().__init__(config)
        self.queue: Any = None

    def worker_argv(self, url: str) -> list[str]:
        common = ["--url", url, "--serializer", "rq.serializers.JSONSerializer", "--quiet"]
        if self.config.startswith("pool"):
            return [str(BIN / "rq"), "worker-pool", "raw", "-n", "2", "-w", "rq.worker.SimpleWorker", *common]
        if self.config.startswith("simple"):
            return [str(BIN / "rq"), "worker", "raw", "-w", "rq.worker.SimpleWorker", *common]
        return [str(BIN / "rq"), "worker", "raw", *common]  # "worker (fork)"

    def connect(self, url: str) -> None:
        import redis
        from rq import Queue
        from rq.serializers import JSONSerializer

        self.queue = Queue("raw", connection=redis.Redis.from_url(url), serializer=JSONSerializer)

    def send(self, task: str, i: int, payload: dict[str, Any] | None = None) -> Any:
        return self.queue.enqueue(self.FUNCS[task], i=i, **(payload or {}))

    def send_bulk(self, task: str, ids: range, payload: dict[str, Any] | None = None) -> bool:
        from rq import Queue

        self.queue.enqueue_many([Queue.prepare_data(self.FUNCS[task], kwargs={"i": i, **(payload or {})})
                                 for i in ids])
        return True

    def ready(self, handle: Any) -> bool:
        return handle.get_status(refresh=True).value == "finished"

    def disconnect(self) -> None:
        if self.queue is not None:
            self.queue.connection.close()


# --- Celery ----------------------------------------------------------------------------------------
class CeleryPeer(System):
    """Celery, Redis broker; config ``prefork -c 2`` or ``threads -c 32``."""

    family = "Celery"

    def __init__(self, config: str = "prefork -c 2") -> None:
        super().__init__(config)
        self.app: Any = None

    def worker_argv(self, url: str) -> list[str]:
        pool, _, concurrency = self.config.split()
        return [str(BIN / "celery"), "-A", "bench.app_celery", "worker", "-Q", "bench", "-P", pool, "-c", concurrency,
                "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]

    def connect(self, url: str) -> None:
        from bench.app_celery import make_app

        self.app = make_app(url)

    def send(self, task: str, i: int, payload: dict[str, Any] | None = None) -> Any:
        from bench.app_celery import TASKS

        # Only the latency task keeps a result; the others must not subscribe to one either.
        return self.app.send_task(TASKS[task], args=[i], kwargs=payload or {}, ignore_result=task != "noop_result")

    def ready(self, handle: Any) -> bool:
        return bool(handle.ready())

    def disconnect(self) -> None:
        # AsyncResult sits in a reference cycle; collect it while Redis is still up, or its __del__
        # later retries unsubscribing from a dead server for seconds per result.
        gc.collect()
        if self.app is not None:
            self.app.close()


# --- Dramatiq --------------------------------------------------------------------------------------
class DramatiqPeer(System):
    """Dramatiq, Redis broker; config ``-p 2 -t 8`` (its default on 2 cores) or ``-p 1 -t 32``."""

    family = "Dramatiq"

    def __init__(self, config: str = "default -p 2 -t 8") -> None:
        super().__init__(config)
        self.broker: Any = None
        self.backend: Any = None

    def worker_argv(self, url: str) -> list[str]:
        words = self.config.split()
        procs, threads = words[words.index("-p") + 1], words[words.index("-t") + 1]
        return [str(BIN / "dramatiq"), "bench.app_dramatiq", "-p", procs, "-t", threads, "-Q", "bench"]

    def connect(self, url: str) -> None:
        from bench.app_dramatiq import make_broker

        self.broker, self.backend = make_broker(url)

    def send(self, task: str, i: int, payload: dict[str, Any] | None = None) -> Any:
        return self.broker.get_actor(task).send(i, **(payload or {}))

    def ready(self, handle: Any) -> bool:
        from dramatiq.results import ResultMissing

        try:
            handle.get_result(backend=self.backend, block=False)
        except ResultMissing:
            return False
        return True

    def disconnect(self) -> None:
        if self.broker is not None:
            self.broker.close()


# --- Huey ------------------------------------------------------------------------------------------
class HueyPeer(System):
    """Huey, Redis storage; config ``thread -w N`` or ``process -w N``."""

    family = "Huey"

    def __init__(self, config: str = "thread -w 2") -> None:
        super().__init__(config)
        self.tasks: dict[str, Any] = {}

    def worker_argv(self, url: str) -> list[str]:
        kind, _, workers = self.config.split()
        return [str(BIN / "huey_consumer"), "bench.app_huey.huey", "-k", kind, "-w", workers, "-q"]

    def connect(self, url: str) -> None:
        from bench.app_huey import make_huey

        _, self.tasks = make_huey(url)

    def send(self, task: str, i: int, payload: dict[str, Any] | None = None) -> Any:
        return self.tasks[task](i, **(payload or {}))

    def ready(self, handle: Any) -> bool:
        return handle.get(preserve=True) is not None


# --- workers ---------------------------------------------------------------------------------------
class Workers:
    """A system's worker processes, in a process group of their own so all of them stop together."""

    def __init__(self, system: System, url: str, marks_path: Path, log_path: Path, extra: list[str] | None = None):
        env = {**os.environ, "BENCH_REDIS_URL": url, "REDIS_URL": url, "BENCH_MARKS": str(marks_path),
               "JOBS_TASK_MODULES": "bench.our_tasks", "JOBS_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([*system.worker_argv(url), *(extra or [])], cwd=ROOT, env=env,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def exited(self) -> int | None:
        return self.proc.poll()

    def log_tail(self, lines: int = 5) -> str:
        if not self._log.closed:
            self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the process group we started, give it 5 s, then SIGKILL what is left of that group."""
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()
