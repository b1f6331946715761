"""What expiry (issue 24, item 2) costs the claim: Redis commands per claimed job, counted by the server.

The claim script reads one more field of each job hash (``fk_expires``, in the HMGET it already
makes), so a job without ``expires`` costs what it did, and a job with one that has not passed
costs the same again. A job whose ``expires`` has passed is ended in the claim (its hash, the
canceled registry, the counter, the event), instead of being started. Measured on a fresh
redis-server with nothing else running, with the lifecycle's own claim call (what a worker
makes), one job per claim and batches of 10 (a simple worker's prefetch):

* ``plain``: jobs without ``expires`` (the case every existing user has: compare with the run
  before the change, ``--json`` of this script at the parent commit, or ``bench.rq_tools_cost``);
* ``live``: jobs with ``expires`` far ahead (claimed and started as usual);
* ``expired``: jobs whose ``expires`` has passed (ended ``expired`` by the claim).

Wall time per claimed job (the claim call's round trip from this process, loopback) is shown
too, as a rough guide: it moves with the machine's load.

Claims are counted until the queue is empty (an empty claim is not charged); enqueue_job's
commands are counted too (``expires`` adds a field to the hash it writes, not a command), and
the bytes of a pending job's hash (``MEMORY USAGE``, exact).

    .venv/bin/python -m bench.expiry_cost [--jobs N] [--json]
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from typing import Any

from bench.redis_probe import FreshRedis
from bench.rq_tools_cost import PAYLOAD, _connect, _key_bytes


def measure(n: int) -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)
    from core.api.queues import email_queue
    from core.platform.connection import get_redis
    from core.queue import lifecycle

    supported = "expires" in inspect.signature(email_queue.enqueue_job).parameters
    server = FreshRedis()
    try:
        _connect(server.url)
        client = get_redis()
        email_queue.enqueue_job("noop", {"i": -1, **PAYLOAD})  # scripts loaded, connection open
        lifecycle.claim(client, "probe", "c", [email_queue.name], 1, 300)
        out: dict[str, Any] = {"jobs": n, "expires_supported": supported}
        cases = [("plain", {})]
        if supported:
            cases += [("live", {"expires": 3600}), ("expired", {"expires": 0.05})]
        for label, options in cases:
            for batch in (1, 10):
                server.reset()
                ids = [email_queue.enqueue_job("noop", {"i": i, **PAYLOAD}, **options) for i in range(n)]
                out[f"{label}_enqueue_commands_per_job"] = server.usage().calls / n
                out[f"{label}_pending_hash_bytes"] = _key_bytes(client, ids, "pending")["pending_hash_bytes"]
                if label == "expired":
                    time.sleep(0.1)  # every one of them is past its expiry now
                calls = 0
                seconds = 0.0
                by_command: dict[str, int] = {}
                ended = 0
                queue_key = f"rq:queue:{email_queue.name}"
                while client.llen(queue_key):  # claims until the queue is empty (no empty claim counted)
                    server.reset()
                    started = time.perf_counter()
                    claimed = lifecycle.claim(client, "probe", "c", [email_queue.name], batch, 300)
                    seconds += time.perf_counter() - started
                    usage = server.usage()
                    calls += usage.calls
                    for k, v in usage.by_command.items():
                        by_command[k] = by_command.get(k, 0) + v
                    ended += len(getattr(claimed, "expired", []))
                    for job in claimed:  # out of the way of the next case, uncounted
                        lifecycle.finish(client, job, lifecycle.AttemptResult(ok=True))
                out[f"{label}_batch{batch}_commands_per_job"] = calls / n
                out[f"{label}_batch{batch}_claim_us_per_job"] = round(seconds / n * 1e6, 1)
                out[f"{label}_batch{batch}_by_command"] = {k: round(v / n, 2) for k, v in sorted(by_command.items())}
                if label == "expired":
                    out[f"{label}_batch{batch}_ended_expired"] = ended
        return out
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = measure(args.jobs)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.jobs} jobs per case, 100-byte payload (expires supported: {result['expires_supported']})")
    for label in ("plain", "live", "expired"):
        for batch in (1, 10):
            key = f"{label}_batch{batch}"
            if f"{key}_commands_per_job" in result:
                print(f"claim {label:8} batch {batch:2}: {result[key + '_commands_per_job']:.2f} commands/job, "
                      f"{result[key + '_claim_us_per_job']:.0f} µs/job (a claim call's round trip, this process)  "
                      f"{result[key + '_by_command']}")
        if f"{label}_enqueue_commands_per_job" in result:
            print(f"enqueue_job {label:8}: {result[label + '_enqueue_commands_per_job']:.2f} commands/job, "
                  f"{result[label + '_pending_hash_bytes']:.0f} bytes per pending job hash (MEMORY USAGE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
