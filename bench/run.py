"""Benchmarks: Fikiri Jobs against raw RQ 3 in the same run.

    .venv/bin/python -m bench.run            # full run (a few minutes)
    .venv/bin/python -m bench.run --quick    # smaller counts, one repetition
    .venv-bench/bin/python -m bench.run --peers [--quick] [--our-config 'simple x2' 'threaded 2x4' ...]
                                             # ours vs raw RQ, Celery, Dramatiq, Huey (requirements-bench.txt)
    .venv/bin/python -m bench.run --figures  # ours only, about 2 minutes: the figures the README quotes
                                             # (bytes per pending job by payload, commands per enqueue
                                             # and per job, an idle worker's commands/s)

Each benchmark runs ours and raw RQ interleaved (A/B/A/B), each repetition on a fresh
redis-server, and prints the median with min-max and the ratio ours/raw. Results are also
written to bench/results/<timestamp>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import rq
from rq import Queue
from rq.serializers import JSONSerializer

from core.config import reload_settings
from core.platform.connection import reset_connections
from tests.servers import ROOT, RedisServer, free_port

RESULTS = ROOT / "bench" / "results"
RAW_NOOP = "bench.raw_tasks.noop"
RAW_SLEEP = "bench.raw_tasks.sleep_100ms"


def point_at(server: RedisServer) -> None:
    os.environ.update({"REDIS_URL": server.url, "JOBS_TASK_MODULES": "bench.our_tasks",
                       "JOBS_HEALTH_CHECK_INTERVAL": "1"})
    reload_settings()
    reset_connections()


def env_for(server: RedisServer) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": server.url, "PYTHONPATH": str(ROOT), "JOBS_TASK_MODULES": "bench.our_tasks"}


def raw_queue(server: RedisServer, name: str = "raw") -> Queue:
    return Queue(name, connection=server.client(), serializer=JSONSerializer)


# --- measurements -------------------------------------------------------------------------------
def enqueue_one_by_one(ours: bool, n: int) -> float:
    server = RedisServer().start()
    try:
        point_at(server)
        if ours:
            from core.api.queues import email_queue

            email_queue.enqueue_job("noop", {"i": 0})
            start = time.perf_counter()
            for i in range(n):
                email_queue.enqueue_job("noop", {"i": i})
        else:
            queue = raw_queue(server)
            queue.enqueue(RAW_NOOP, i=0)
            start = time.perf_counter()
            for i in range(n):
                queue.enqueue(RAW_NOOP, i=i)
        return n / (time.perf_counter() - start)
    finally:
        server.cleanup()


def enqueue_bulk(ours: bool, n: int) -> float:
    server = RedisServer().start()
    try:
        point_at(server)
        payloads = [{"i": i} for i in range(n)]
        if ours:
            from core.api.queues import email_queue

            start = time.perf_counter()
            email_queue.enqueue_many("noop", payloads)
        else:
            queue = raw_queue(server)
            start = time.perf_counter()
            queue.enqueue_many([Queue.prepare_data(RAW_NOOP, kwargs=p) for p in payloads])
        return n / (time.perf_counter() - start)
    finally:
        server.cleanup()


def _completion_rate(server: RedisServer, ids: list[str]) -> float:
    client = server.client()
    with client.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hmget(f"rq:job:{job_id}", "started_at", "ended_at", "status")
        rows = pipe.execute()
    from rq.utils import str_to_date

    assert all(r[2] == b"finished" for r in rows), "not every job finished"
    first = min(str_to_date(r[0]) for r in rows)
    last = max(str_to_date(r[1]) for r in rows)
    return len(ids) / max((last - first).total_seconds(), 1e-6)


def _peak_rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for child in [pid, *_children(pid)]:
            try:
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
    return total


def _children(pid: int) -> list[int]:
    try:
        direct = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return direct + [g for c in direct for g in _children(c)]


def process(mode: str, n: int, task: str) -> dict[str, float]:
    """Enqueue n jobs, run workers in burst mode, measure jobs/s first start to last end."""
    server = RedisServer().start()
    try:
        point_at(server)
        if mode.startswith("ours"):
            from core.api.queues import email_queue

            ids = email_queue.enqueue_many(task, [{} for _ in range(n)], max_retries=0)
            kind = {"ours-fork": "fork", "ours-fast": "threaded", "ours-threaded-io": "threaded"}[mode]
            args = [sys.executable, "scripts/rq_worker.py", "email", "--burst", "--worker-class", kind]
            if mode == "ours-threaded-io":
                args += ["--concurrency", "32"]
            elif mode == "ours-fast":
                args += ["--concurrency", "4", "--processes", "2"]
        else:
            func = RAW_NOOP if task == "noop" else RAW_SLEEP
            queue = raw_queue(server)
            ids = [j.id for j in queue.enqueue_many([Queue.prepare_data(func) for _ in range(n)])]
            rq_bin = str(Path(sys.executable).parent / "rq")
            if mode == "raw-worker":
                args = [rq_bin, "worker", "raw", "--burst", "--url", server.url, "--serializer",
                        "rq.serializers.JSONSerializer", "--quiet"]
            else:  # raw-pool
                args = [rq_bin, "worker-pool", "raw", "-n", "2", "-w", "rq.worker.SimpleWorker", "--burst",
                        "--url", server.url, "--serializer", "rq.serializers.JSONSerializer", "--quiet"]
        proc = subprocess.Popen(args, cwd=ROOT, env=env_for(server), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _peak_rss_kb([proc.pid]))
            time.sleep(0.2)
        return {"jobs_per_s": _completion_rate(server, ids), "peak_rss_mb": peak / 1024}
    finally:
        server.cleanup()


def latency(ours: bool, n: int) -> dict[str, float]:
    """Enqueue one job at a time into an idle worker: enqueue->start and enqueue->result."""
    server = RedisServer().start()
    try:
        point_at(server)
        if ours:
            args = [sys.executable, "scripts/rq_worker.py", "email"]
        else:
            args = [str(Path(sys.executable).parent / "rq"), "worker", "raw", "--url", server.url,
                    "--serializer", "rq.serializers.JSONSerializer", "--quiet"]
        proc = subprocess.Popen(args, cwd=ROOT, env=env_for(server), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        client = server.client()
        time.sleep(2)
        to_start, to_result = [], []
        from rq.utils import str_to_date

        for i in range(n):
            t0 = time.time()
            if ours:
                from core.api.queues import email_queue

                job_id = email_queue.enqueue_job("noop", {"i": i}, max_retries=0)
            else:
                job_id = raw_queue(server).enqueue(RAW_NOOP, i=i).id
            while client.hget(f"rq:job:{job_id}", "status") != b"finished":
                time.sleep(0.0005)
            done = time.time()
            started = str_to_date(client.hget(f"rq:job:{job_id}", "started_at")).timestamp()
            to_start.append(started - t0)
            to_result.append(done - t0)
        proc.terminate()
        proc.wait(timeout=30)
        pct = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]  # noqa: E731
        return {"start_p50_ms": pct(to_start, 0.5) * 1000, "start_p99_ms": pct(to_start, 0.99) * 1000,
                "result_p50_ms": pct(to_result, 0.5) * 1000, "result_p99_ms": pct(to_result, 0.99) * 1000}
    finally:
        server.cleanup()


def memory_per_job(ours: bool, n: int) -> float:
    server = RedisServer().start()
    try:
        point_at(server)
        client = server.client()
        before = client.info("memory")["used_memory"]
        payload = {"body": "x" * 92}  # 100 bytes of JSON
        if ours:
            from core.api.queues import email_queue

            for start in range(0, n, 1000):
                email_queue.enqueue_many("noop", [payload] * min(1000, n - start))
        else:
            queue = raw_queue(server)
            for start in range(0, n, 1000):
                queue.enqueue_many([Queue.prepare_data(RAW_NOOP, kwargs=payload) for _ in range(min(1000, n - start))])
        return (client.info("memory")["used_memory"] - before) / n
    finally:
        server.cleanup()


def fallback_enqueue(n: int) -> dict[str, float]:
    os.environ.update({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "JOBS_TASK_MODULES": "bench.our_tasks",
                       "JOBS_FALLBACK_MAX_PENDING": str(n + 10)})
    reload_settings()
    reset_connections()
    from core.api.queues import email_queue

    email_queue.enqueue_job("noop", {})
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        email_queue.enqueue_job("noop", {"i": i})
        samples.append(time.perf_counter() - t0)
    samples.sort()
    return {"p50_ms": samples[len(samples) // 2] * 1000, "p99_ms": samples[int(len(samples) * 0.99)] * 1000}


def stats_with(jobs: int) -> dict[str, float]:
    """get_stats() cost with `jobs` entries in Redis (ids pushed straight into the list/registries)."""
    server = RedisServer().start()
    try:
        point_at(server)
        client = server.client()
        from core.api.queues import email_queue

        with client.pipeline(transaction=False) as pipe:
            for start in range(0, jobs, 10_000):
                chunk = [f"j{i}" for i in range(start, min(jobs, start + 10_000))]
                pipe.rpush(email_queue.rq_queue.key, *chunk)
                pipe.zadd(f"rq:finished:{email_queue.name}", {c: time.time() + 3600 for c in chunk})
            pipe.execute()
        samples = []
        for _ in range(300):
            t0 = time.perf_counter()
            stats = email_queue.get_stats()
            samples.append(time.perf_counter() - t0)
        assert stats["pending_jobs"] == jobs
        samples.sort()
        return {"p50_ms": samples[150] * 1000, "p99_ms": samples[297] * 1000}
    finally:
        server.cleanup()


# --- the README's figures (--figures) -------------------------------------------------------------
def _text_payload(size: int, seed: int = 7) -> dict[str, str]:
    """A payload of about ``size`` bytes of JSON whose text is varied (English-like words), so
    zlib shrinks it only as much as it would shrink a real email body."""
    import random

    words = ("the invoice for march is attached please confirm receipt of payment before friday "
             "thanks regards meeting moved to thursday call me when you can order shipped tracking").split()
    rng = random.Random(seed)
    text = ""
    while len(text) < size - 12:
        text += rng.choice(words) + " "
    return {"body": text[: size - 12]}


MEMORY_PAYLOADS: dict[str, dict[str, Any]] = {
    "tiny ({\"i\": n})": {},
    "100 B, repetitive (the peers' payload, \"x\" * 92)": {"body": "x" * 92},
    "200 B of text": _text_payload(200),
    "600 B of text": _text_payload(600),
    "2 KiB of text": _text_payload(2048),
}


def memory_by_payload(n: int, listpack_value: int | None = None, rounds: int = 3) -> list[dict[str, Any]]:
    """Bytes of Redis data (MEMORY STATS ``dataset.bytes``) per pending job, for each payload of
    :data:`MEMORY_PAYLOADS`: n jobs each, enqueued in bulk on a fresh server, measured as
    bench.peers measures its 100-byte payload, the median of ``rounds`` (the allocator moves a
    single measurement by up to ~50 bytes per job); with the size and kind (JSON or zlib) of one job's
    ``data`` field and the job hash's encoding (listpack or hashtable). ``listpack_value``: the
    server's ``hash-max-listpack-value`` (default 64), for what raising it buys."""
    from bench.redis_probe import FreshRedis
    from bench.systems import Ours

    def once(payload: dict[str, Any]) -> tuple[float, bytes, Any]:
        system = Ours("simple")
        server = FreshRedis()
        try:
            if listpack_value is not None:
                server.client.config_set("hash-max-listpack-value", listpack_value)
            system.connect(server.url)
            first = system.send("noop", 0, payload)
            before = server.used_memory()
            for start in range(1, n + 1, 1000):
                system.send_bulk("noop", range(start, min(n + 1, start + 1000)), payload)
            per_job = (server.used_memory() - before) / n
            return (per_job, server.client.hget(f"rq:job:{first}", "data") or b"",
                    server.client.object("encoding", f"rq:job:{first}"))
        finally:
            system.disconnect()
            server.stop()

    rows = []
    for label, payload in MEMORY_PAYLOADS.items():
        runs = [once(payload) for _ in range(rounds)]
        per_job = statistics.median(r[0] for r in runs)
        _, data, encoding = runs[0]
        row = {"payload": label, "hash_max_listpack_value": listpack_value or 64, "bytes_per_job": per_job,
               "runs": [round(r[0]) for r in runs], "data_bytes": len(data), "data_is_json": data[:1] == b"[",
               "hash_encoding": encoding.decode() if isinstance(encoding, bytes) else encoding}
        rows.append(row)
        print(f"memory   {label:48} {per_job:6.0f} bytes/job {row['runs']}  data {len(data):5} B "
              f"{'JSON' if row['data_is_json'] else 'zlib'}  hash {row['hash_encoding']}", flush=True)
    return rows


def idle_worker_cost(seconds: float, settle: float = 3.0) -> dict[str, Any]:
    """Redis commands and round trips per second of one idle worker on every queue (the default
    ``scripts/rq_worker.py`` with no options), counted after it has settled for ``settle`` s."""
    import signal

    from bench.redis_probe import FreshRedis

    server = FreshRedis()
    proc = subprocess.Popen([sys.executable, "scripts/rq_worker.py"], cwd=ROOT,
                            env={**os.environ, "REDIS_URL": server.url, "PYTHONPATH": str(ROOT),
                                 "JOBS_TASK_MODULES": "bench.our_tasks", "JOBS_LOG_LEVEL": "WARNING"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not server.client.scard("rq:workers"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not register (exit {proc.poll()})")
            time.sleep(0.1)
        time.sleep(settle)
        server.reset()
        time.sleep(seconds)
        used = server.usage()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        server.stop()
    return {"seconds": seconds, "commands_per_s": used.calls / seconds, "round_trips_per_s": used.reads / seconds,
            "by_command_per_s": {k: round(v / seconds, 2) for k, v in sorted(used.by_command.items())}}


def enqueue_commands(n: int) -> dict[str, float]:
    """Redis commands and round trips per job: n enqueues one by one, then n in one ``enqueue_many``
    (on a fresh server, after one warm-up enqueue that loads the scripts)."""
    from bench.redis_probe import FreshRedis
    from bench.systems import Ours

    system = Ours("simple")
    server = FreshRedis()
    try:
        system.connect(server.url)
        system.send("noop", 0)
        server.reset()
        start = time.perf_counter()
        for i in range(1, n + 1):
            system.send("noop", i)
        one_rate = n / (time.perf_counter() - start)
        one = server.usage()
        server.reset()
        start = time.perf_counter()
        system.send_bulk("noop", range(n + 1, 2 * n + 1))
        bulk_rate = n / (time.perf_counter() - start)
        bulk = server.usage()
    finally:
        system.disconnect()
        server.stop()
    return {"one_by_one_per_s": one_rate, "one_cmds_per_job": one.calls / n, "one_reads_per_job": one.reads / n,
            "one_by_command": {k: v / n for k, v in sorted(one.by_command.items())},
            "bulk_per_s": bulk_rate, "bulk_cmds_per_job": bulk.calls / n, "bulk_reads_per_job": bulk.reads / n}


# prefork 1x2 is the worker's default on 2 cores (JOBS_WORKER_CLASS=prefork, one child per CPU)
FIGURE_CONFIGS = ["prefork 1x2", "simple x2", "simple x2 prefetch 10"]


def figures(n_jobs: int, n_memory: int, idle_seconds: float) -> dict[str, Any]:
    """The figures the README quotes, ours only, each on a fresh redis-server."""
    from bench.peers import throughput
    from bench.systems import Ours

    out: dict[str, Any] = {"memory": memory_by_payload(n_memory)}
    print("memory with the server's hash-max-listpack-value at 1024:", flush=True)
    out["memory_listpack_1024"] = memory_by_payload(n_memory, 1024)
    enq = enqueue_commands(n_jobs)
    out["enqueue"] = enq
    print(f"enqueue  one by one {enq['one_cmds_per_job']:.2f} commands, {enq['one_reads_per_job']:.2f} round trips "
          f"per job ({enq['one_by_one_per_s']:,.0f} jobs/s): {enq['one_by_command']}; bulk "
          f"{enq['bulk_cmds_per_job']:.2f} commands, {enq['bulk_reads_per_job']:.3f} round trips per job "
          f"({enq['bulk_per_s']:,.0f} jobs/s)", flush=True)
    out["processing"] = {}
    for config in FIGURE_CONFIGS:
        got = throughput(Ours(config), "noop", n_jobs)
        out["processing"][config] = got
        print(f"process  {config:24} {got['cmds_per_job']:.2f} commands, {got['reads_per_job']:.2f} round trips "
              f"per job ({got['jobs_per_s']:,.0f} jobs/s)", flush=True)
    out["idle_worker"] = idle_worker_cost(idle_seconds)
    print(f"idle     {out['idle_worker']['commands_per_s']:.1f} commands/s, "
          f"{out['idle_worker']['round_trips_per_s']:.1f} round trips/s over {idle_seconds:.0f} s: "
          f"{out['idle_worker']['by_command_per_s']}", flush=True)
    return out


# --- harness -------------------------------------------------------------------------------------
def compare(name: str, ours: Callable[[], Any], raw: Callable[[], Any], reps: int, key: str | None = None,
            higher_is_better: bool = True) -> dict[str, Any]:
    """Run ours and raw interleaved; summarise medians (of `key` when results are dicts)."""
    ours_runs, raw_runs = [], []
    for _ in range(reps):
        ours_runs.append(ours())
        raw_runs.append(raw())

    def values(runs: list[Any]) -> list[float]:
        return [r[key] if key else r for r in runs]

    o, r = values(ours_runs), values(raw_runs)
    row = {"benchmark": name, "metric": key or "value", "ours_median": statistics.median(o), "ours_min": min(o),
           "ours_max": max(o), "raw_median": statistics.median(r), "raw_min": min(r), "raw_max": max(r),
           "ratio": statistics.median(o) / statistics.median(r), "higher_is_better": higher_is_better,
           "ours_runs": ours_runs, "raw_runs": raw_runs}
    print(f"{name:44} {key or '':14} ours {row['ours_median']:10.2f} ({min(o):.2f}-{max(o):.2f})  "
          f"raw {row['raw_median']:10.2f} ({min(r):.2f}-{max(r):.2f})  ours/raw {row['ratio']:.2f}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts, one round (peers: under ~3 minutes)")
    parser.add_argument("--peers", action="store_true",
                        help="ours vs raw RQ, Celery, Dramatiq and Huey in one interleaved run (bench/peers.py)")
    parser.add_argument("--our-config", nargs="+", metavar="CONFIG",
                        help="our worker configs for --peers throughput and latency, e.g. 'simple x2' "
                             "'threaded 2x4' 'prefork 2' (class, processes x concurrency)")
    parser.add_argument("--our-io-config", nargs="+", metavar="CONFIG",
                        help="our worker configs for the --peers I/O scenario (default 'threaded 1x32')")
    parser.add_argument("--issue22", action="store_true",
                        help="with --peers: `fikiri-worker` with no flags against each peer's default (Dramatiq "
                             "-p 2 -t 8, Huey -w 2 -k process) and raw RQ, issue 22's targets checked")
    parser.add_argument("--rounds", type=int, default=None, help="with --peers: interleaved rounds")
    parser.add_argument("--figures", action="store_true",
                        help="ours only: bytes per pending job by payload, commands per enqueue and per job, "
                             "an idle worker's commands/s (the README's figures; about 2 minutes)")
    args = parser.parse_args()
    if args.figures:
        # memory always with 10,000 jobs: with fewer, the allocator's steps move bytes/job by 20-30%
        result = figures(500 if args.quick else 2000, 10_000, 10 if args.quick else 20)
        result["at"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        result["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                          text=True).stdout.strip()
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / time.strftime("figures-%Y%m%d-%H%M%S.json")
        out.write_text(json.dumps(result, indent=2, default=str))
        print(f"results: {out}")
        return
    if args.peers:
        from bench import peers

        peers.main(args.quick, args.our_config, args.our_io_config, args.issue22, args.rounds)
        return
    reps = 1 if args.quick else 3
    n_enqueue, n_process, n_io = (500, 500, 200) if args.quick else (3000, 2000, 1000)
    rows = [
        compare("enqueue one by one (jobs/s)", lambda: enqueue_one_by_one(True, n_enqueue),
                lambda: enqueue_one_by_one(False, n_enqueue), reps),
        compare("enqueue bulk, pipelined (jobs/s)", lambda: enqueue_bulk(True, n_enqueue * 3),
                lambda: enqueue_bulk(False, n_enqueue * 3), reps),
        compare("no-op jobs: default fork worker vs rq worker", lambda: process("ours-fork", n_process, "noop"),
                lambda: process("raw-worker", n_process, "noop"), reps, "jobs_per_s"),
        compare("no-op: fast (2 procs x 4 threads) vs pool -n2 Simple", lambda: process("ours-fast", n_process, "noop"),
                lambda: process("raw-pool", n_process, "noop"), reps, "jobs_per_s"),
    ]
    io_rows = [compare("100 ms I/O jobs: threaded x32 vs worker-pool -n2",
                       lambda: process("ours-threaded-io", n_io, "sleep_100ms"),
                       lambda: process("raw-pool", n_io, "sleep_100ms"), reps, "jobs_per_s")]
    io_rows[0]["rss"] = {"ours_peak_rss_mb": [r["peak_rss_mb"] for r in io_rows[0]["ours_runs"]],
                         "raw_peak_rss_mb": [r["peak_rss_mb"] for r in io_rows[0]["raw_runs"]]}
    print(f"{'':44} peak RSS MB: ours {io_rows[0]['rss']['ours_peak_rss_mb']} raw {io_rows[0]['rss']['raw_peak_rss_mb']}")
    rows += io_rows
    lat = compare("latency, idle fork worker (200 jobs)", lambda: latency(True, 50 if args.quick else 200),
                  lambda: latency(False, 50 if args.quick else 200), 1, "result_p50_ms", higher_is_better=False)
    for key in ("start_p50_ms", "start_p99_ms", "result_p99_ms"):
        print(f"{'':44} {key:14} ours {lat['ours_runs'][0][key]:10.2f}  raw {lat['raw_runs'][0][key]:10.2f}")
    rows.append(lat)
    rows.append(compare("Redis memory per pending job (bytes)", lambda: memory_per_job(True, 10_000),
                        lambda: memory_per_job(False, 10_000), 1, higher_is_better=False))
    extra = {"fallback_enqueue": fallback_enqueue(2000),
             "stats_10_jobs": stats_with(10), "stats_1M_jobs": stats_with(10_000 if args.quick else 1_000_000)}
    print(json.dumps(extra, indent=2))
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    machine = {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "rq": rq.__version__,
               "redis_py": redis.__version__,
               "redis_server": subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip(),
               "loadavg_at_end": Path("/proc/loadavg").read_text().strip()}
    print(json.dumps(machine, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / time.strftime("%Y%m%d-%H%M%S.json")
    out.write_text(json.dumps({"machine": machine, "quick": args.quick, "rows": rows, "extra": extra}, indent=2,
                              default=str))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
