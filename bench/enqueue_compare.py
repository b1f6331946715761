"""Enqueue one by one and bytes per pending job, this tree against an older checkout, interleaved
(issue 22 item 5): the same measurement run in a subprocess in each tree, rounds alternated.

    .venv/bin/python -m bench.enqueue_compare --before /path/to/checkout-of-main [--rounds 5] [--layouts]

Per tree and round, on a fresh redis-server each (``tests.servers.RedisServer``, Redis defaults):

- one by one: ``email_queue.enqueue_job("noop", {"i": n})`` ``--jobs`` times; jobs/s, the client's
  CPU per enqueue (user and system, ``os.times``: steadier than jobs/s on a shared machine) and
  Redis's own time per enqueue (``INFO commandstats`` usec of EVALSHA, which includes the
  commands the script runs);
- memory: 10,000 pending jobs with the peers' 100-byte payload (``{"body": "x" * 92}``, enqueued
  one by one as a web process does), growth of MEMORY STATS ``dataset.bytes`` per job, and where
  the bytes go: the job hashes (the growth from their writes alone), the queue list and the
  ``fikiri:events`` stream (each measured by deleting it), the hash's encoding; then the same with
  the server's ``hash-max-listpack-value`` at 1024.

Medians over the rounds, with min-max. The older tree needs ``bench/run.py``'s ``point_at`` and
``tests/servers.py`` (main has both since issue 10).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = {"body": "x" * 92}  # 100 bytes of JSON, as bench.peers' memory scenario


def _scripts_usec(client: Any) -> float:
    """Redis's time in the enqueue scripts (a script's usec includes the commands it runs, which
    commandstats also counts on their own lines, so only the script lines are summed)."""
    return sum(v["usec"] for k, v in client.info("commandstats").items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


def one_by_one(jobs: int) -> dict[str, float]:
    from bench.run import point_at
    from tests.servers import RedisServer

    server = RedisServer().start()
    try:
        point_at(server)
        from core.api.queues import email_queue

        for i in range(200):  # warm: scripts loaded, health check cached, caches filled
            email_queue.enqueue_job("noop", {"i": i})
        client = server.client()
        client.config_resetstat()
        before, started = os.times(), time.perf_counter()
        for i in range(jobs):
            email_queue.enqueue_job("noop", {"i": i})
        elapsed, after = time.perf_counter() - started, os.times()
        return {"enqueues_per_s": jobs / elapsed,
                "client_user_us": (after.user - before.user) / jobs * 1e6,
                "client_sys_us": (after.system - before.system) / jobs * 1e6,
                "redis_us": _scripts_usec(client) / jobs}
    finally:
        server.cleanup()


def memory(n: int, listpack_value: int | None) -> dict[str, Any]:
    from bench.run import point_at
    from tests.servers import RedisServer

    server = RedisServer().start()
    try:
        point_at(server)
        client = server.client()
        if listpack_value:
            client.config_set("hash-max-listpack-value", listpack_value)
        from core.api.queues import email_queue
        from core.platform import keys

        email_queue.enqueue_job("noop", {"i": 0})  # the queue's own keys exist before the count starts
        used = lambda: client.memory_stats()["dataset.bytes"]  # noqa: E731
        start = used()
        for _ in range(n):
            email_queue.enqueue_job("noop", PAYLOAD)
        total = used() - start
        queue = email_queue.name
        sample = client.lindex(keys.queue(queue), -1).decode()
        encoding = client.object("encoding", keys.job(sample)).decode()
        with_all = used()
        client.delete(keys.events())
        events = with_all - used()
        with_list = used()
        client.delete(keys.queue(queue))
        listed = with_list - used()
        return {"bytes_per_job": total / n, "events_per_job": events / n, "list_per_job": listed / n,
                "hash_per_job": (total - events - listed) / n, "hash_encoding": encoding}
    finally:
        server.cleanup()


def layouts(n: int = 10_000) -> list[dict[str, Any]]:
    """What a pending job would cost with other hash layouts (written straight with HSET, RPUSH and
    XADD, as our scripts would): the fields written today, without the five that hold a default
    or a copy (``enqueued_at`` = ``created_at``, ``timeout``, ``result_ttl``, ``failure_ttl``,
    ``fk_max``), and with 22-character ids; under Redis's default ``hash-max-listpack-value`` (64)
    and at 1024. The peers' 100-byte payload, and a tiny one."""
    from tests.servers import RedisServer

    now = "2026-12-07T17:17:08.335559Z"
    today = {"status": "queued", "created_at": now, "enqueued_at": now, "origin": "fikiri:email", "timeout": "300",
             "result_ttl": "86400", "failure_ttl": "604800", "fk_task": "noop", "fk_max": "0"}
    calls = {"100 B": ('["noop",null,[],{"body":"' + "x" * 92 + '"}]', "noop(body='" + "x" * 50 + "..."),
             "tiny": ('["noop",null,[],{"i":1}]', "noop(i=1)")}
    defaults = ("enqueued_at", "timeout", "result_ttl", "failure_ttl", "fk_max")
    rows = []
    server = RedisServer().start()
    try:
        client = server.client()
        used = lambda: client.memory_stats()["dataset.bytes"]  # noqa: E731
        for payload, (data, description) in calls.items():
            for layout, drop, id_bytes in (("today's 11 fields", (), 16), ("without the 5 defaults", defaults, 16),
                                           ("without the 5 defaults, 22-char ids", defaults, 11)):
                fields = {k: v for k, v in today.items() if k not in drop} | {"description": description, "data": data}
                for listpack in (64, 1024):
                    client.flushall()
                    client.config_set("hash-max-listpack-value", listpack)
                    start = used()
                    for _ in range(n):
                        job_id = os.urandom(id_bytes).hex()
                        client.hset(f"rq:job:{job_id}", mapping=fields)
                        client.rpush("rq:queue:fikiri:email", job_id)
                        client.xadd("fikiri:events", {"job": job_id, "event": "enqueued", "queue": "email",
                                                      "task": "noop"}, maxlen=50_000, approximate=True)
                    rows.append({"payload": payload, "layout": layout, "hash_max_listpack_value": listpack,
                                 "bytes_per_job": (used() - start) / n})
    finally:
        server.cleanup()
    return rows


def measure(jobs: int, n_memory: int) -> dict[str, Any]:
    return {"one_by_one": one_by_one(jobs), "memory": memory(n_memory, None), "memory_1024": memory(n_memory, 1024)}


def _run_in(root: Path, jobs: int, n_memory: int) -> dict[str, Any]:
    code = (f"import json, sys; sys.path.insert(0, {str(root)!r}); "
            f"import runpy; "
            f"m = runpy.run_path({str(Path(__file__).resolve())!r}); "
            f"print('RESULT ' + json.dumps(m['measure']({jobs}, {n_memory})))")
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(root), env=env, capture_output=True, text=True,
                          timeout=900)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"measurement in {root} failed: {proc.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def _stat(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f} ({min(values):,.1f}–{max(values):,.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the tree to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--memory-jobs", type=int, default=10_000)
    parser.add_argument("--layouts", action="store_true", help="also: bytes per pending job of other hash layouts")
    args = parser.parse_args()
    if args.layouts:
        for row in layouts():
            print(f"| {row['payload']} | {row['layout']} | {row['hash_max_listpack_value']} | "
                  f"{row['bytes_per_job']:,.0f} |", flush=True)
    trees = {"this tree": ROOT, "before": args.before.resolve()}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for round_no in range(args.rounds):
        order = list(trees) if round_no % 2 == 0 else list(reversed(trees))
        for name in order:
            results[name].append(_run_in(trees[name], args.jobs, args.memory_jobs))
        print(f"round {round_no + 1} done", flush=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = [("enqueue one by one (jobs/s)", "one_by_one", "enqueues_per_s"),
            ("client CPU per enqueue, user (µs)", "one_by_one", "client_user_us"),
            ("client CPU per enqueue, system (µs)", "one_by_one", "client_sys_us"),
            ("Redis time per enqueue (µs, EVALSHA in commandstats)", "one_by_one", "redis_us"),
            ("bytes per pending job (Redis defaults)", "memory", "bytes_per_job"),
            ("  of which the job hash", "memory", "hash_per_job"),
            ("  of which the queue list", "memory", "list_per_job"),
            ("  of which the `enqueued` event", "memory", "events_per_job"),
            ("bytes per pending job (hash-max-listpack-value 1024)", "memory_1024", "bytes_per_job"),
            ("  of which the job hash", "memory_1024", "hash_per_job")]
    print(f"| median (min–max) of {args.rounds} rounds | {' | '.join(trees)} |")
    print(f"| --- | {' | '.join('---' for _ in trees)} |")
    for label, part, key in rows:
        print(f"| {label} | {' | '.join(_stat([r[part][key] for r in results[name]]) for name in trees)} |")
    for part in ("memory", "memory_1024"):
        print(part, "hash encoding:", {name: results[name][0][part]["hash_encoding"] for name in trees})


if __name__ == "__main__":
    main()
