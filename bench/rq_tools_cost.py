"""What making RQ's tools read our jobs costs, per job (issue 19, item 8).

RQ's tools need, besides the job hash: the queue in ``rq:queues`` (one SADD per enqueue call),
``enqueued_at`` and ``description`` in the hash, and RQ's result record, the stream
``rq:results:<id>`` (one XADD and one EXPIRE per ended attempt). This measures, on a fresh
redis-server with nothing else running, for jobs with a 100-byte payload:

* Redis commands per job, counted by the server (``INFO commandstats`` counts the calls made
  inside our Lua scripts too): one ``enqueue_job`` call, then one claim and one finish each;
* bytes per job of the job's own keys (``MEMORY USAGE``, exact: its hash and its result stream),
  pending, completed (with a 40-byte result) and failed (with a 1.2 KB traceback). The shared
  keys (queue list, registries, events stream, counters) are the same before and after.

A stream preallocates its first node: min(4096, ``stream-node-max-bytes``) bytes (Redis's
t_stream.c), so a one-entry result stream costs about 4.7 KB at Redis's default; RQ's own
workers pay the same per job. ``--stream-node-max-bytes 512`` shows the cost with that setting.

The claim and finish are the lifecycle's own calls (what a worker makes), in this process, so
the count has no worker's heartbeat or polling in it.

    .venv/bin/python -m bench.rq_tools_cost [--jobs N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from bench.redis_probe import FreshRedis

PAYLOAD = {"body": "x" * 92}  # 100 bytes of JSON with the "i" of each job
RESULT = '{"sent":true,"message_id":"m-0123456789"}'
ERROR = "".join(f'  File "/srv/app/email_automation/smtp.py", line {100 + i}, in send\n    conn.sendmail(...)\n'
                for i in range(12)) + "smtplib.SMTPServerDisconnected: Connection unexpectedly closed"


def _connect(url: str) -> None:
    os.environ.update({"REDIS_URL": url, "JOBS_TASK_MODULES": "bench.our_tasks"})
    import bench.our_tasks  # noqa: F401 - registers the tasks
    from core.config import reload_settings
    from core.platform.connection import reset_connections

    reload_settings()
    reset_connections()


def _key_bytes(client: Any, ids: list[str], label: str) -> dict[str, float]:
    """MEMORY USAGE (exact, SAMPLES 0) of each job's own keys, averaged: its hash and its result stream."""
    from core.platform import keys

    with client.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.memory_usage(keys.job(job_id), samples=0)
            pipe.memory_usage(keys.results(job_id), samples=0)
        sizes = pipe.execute()
    hashes, streams = [s or 0 for s in sizes[0::2]], [s or 0 for s in sizes[1::2]]
    return {f"{label}_hash_bytes": sum(hashes) / len(ids), f"{label}_results_bytes": sum(streams) / len(ids)}


def measure(n: int, stream_node_max_bytes: int | None = None) -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)  # one log line per job attempt otherwise
    from core.api.queues import email_queue
    from core.platform.connection import get_redis
    from core.queue import lifecycle

    server = FreshRedis()
    try:
        if stream_node_max_bytes is not None:  # what each new stream preallocates (min(4096, this))
            server.client.config_set("stream-node-max-bytes", stream_node_max_bytes)
        _connect(server.url)
        client = get_redis()
        for attempt in (lifecycle.AttemptResult(ok=True, result_json=RESULT),
                        lifecycle.AttemptResult(ok=False, error=ERROR, retryable=False)):
            email_queue.enqueue_job("noop", {"i": -1, **PAYLOAD})  # scripts loaded, connection open
            lifecycle.finish(client, lifecycle.claim(client, "probe", "c", [email_queue.name], 1, 300)[0], attempt)
        server.reset()
        ids = [email_queue.enqueue_job("noop", {"i": i, **PAYLOAD}) for i in range(n)]
        enqueue = server.usage()
        out: dict[str, Any] = {"jobs": n, **_key_bytes(client, ids, "pending"), "enqueue_commands": enqueue.calls / n,
                               "enqueue_by_command": {k: v / n for k, v in sorted(enqueue.by_command.items())}}
        for label, attempt in (("completed", lifecycle.AttemptResult(ok=True, result_json=RESULT)),
                               ("failed", lifecycle.AttemptResult(ok=False, error=ERROR, retryable=False))):
            if label == "failed":
                ids = [email_queue.enqueue_job("noop", {"i": i, **PAYLOAD}) for i in range(n)]
            for _ in ids:
                claimed = lifecycle.claim(client, "probe", "c", [email_queue.name], 1, 300)
                lifecycle.finish(client, claimed[0], attempt)
            out.update(_key_bytes(client, ids, label))
        # commands of one claim and one finish, counted separately on one more job each way
        for label, attempt in (("completed", lifecycle.AttemptResult(ok=True, result_json=RESULT)),
                               ("failed", lifecycle.AttemptResult(ok=False, error=ERROR, retryable=False))):
            claims = finishes = 0
            by_command: dict[str, int] = {}
            for i in range(n):
                email_queue.enqueue_job("noop", {"i": i, **PAYLOAD})
                server.reset()
                claimed = lifecycle.claim(client, "probe", "c", [email_queue.name], 1, 300)
                claims += server.usage().calls
                server.reset()
                lifecycle.finish(client, claimed[0], attempt)
                usage = server.usage()
                finishes += usage.calls
                for k, v in usage.by_command.items():
                    by_command[k] = by_command.get(k, 0) + v
            out[f"{label}_claim_commands"] = claims / n
            out[f"{label}_finish_commands"] = finishes / n
            out[f"{label}_finish_by_command"] = {k: v / n for k, v in sorted(by_command.items())}
        out["per_job_commands"] = out["enqueue_commands"] + out["completed_claim_commands"] + \
            out["completed_finish_commands"]
        return out
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--stream-node-max-bytes", type=int, default=None,
                        help="set this redis-server option first (default: the server's, 4096)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.jobs, args.stream_node_max_bytes)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.jobs} jobs, 100-byte payload, stream-node-max-bytes "
          f"{args.stream_node_max_bytes or 'default'}")
    print(f"enqueue_job           {result['enqueue_commands']:.2f} commands/job  {result['enqueue_by_command']}")
    for label in ("completed", "failed"):
        print(f"claim ({label:9})     {result[label + '_claim_commands']:.2f} commands/job")
        print(f"finish ({label:9})    {result[label + '_finish_commands']:.2f} commands/job  "
              f"{result[label + '_finish_by_command']}")
    print(f"enqueue+claim+finish  {result['per_job_commands']:.2f} commands/job (completed)")
    for label in ("pending", "completed", "failed"):
        print(f"bytes per {label:9} job: hash {result[label + '_hash_bytes']:.0f} + rq:results "
              f"{result[label + '_results_bytes']:.0f} = {result[label + '_hash_bytes'] + result[label + '_results_bytes']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
