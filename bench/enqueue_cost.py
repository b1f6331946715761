"""What one ``enqueue_job`` sends to Redis (issue 22 item 5): round trips and commands.

    .venv/bin/python -m bench.enqueue_cost [--jobs 2000]

On a private redis-server: MONITOR sees every command, and marks those a script ran (``lua``),
so the client's round trips are the lines not from a script; INFO commandstats over ``--jobs``
enqueues gives the commands per enqueue (a script call counts once plus every command it runs).
Three kinds of enqueue: plain, with a user (the per-user index), delayed. Also the one-by-one
rate from this process, and whether redis-py parses with hiredis.
"""

from __future__ import annotations

import argparse
import os
import threading
import time

import redis
from redis.utils import HIREDIS_AVAILABLE

from bench.run import point_at
from tests.servers import RedisServer

KINDS = {"plain": {}, "with user_id": {"user_id": "u1"}, "delayed 60 s": {"delay": 60}}


def _commands(client: redis.Redis) -> int:
    return sum(v["calls"] for k, v in client.info("commandstats").items() if k not in ("cmdstat_info",))


def watched(server: RedisServer, options: dict) -> list[tuple[str, str]]:
    """(source, command) of everything one enqueue sent: source "lua" for a script's own commands."""
    from core.api.queues import email_queue

    seen: list[tuple[str, str]] = []
    ready = threading.Event()

    def watch() -> None:
        with redis.Redis(port=server.port).monitor() as monitor:
            ready.set()
            for entry in monitor.listen():
                command = entry["command"]
                if command.startswith("PING") and not seen:
                    continue
                seen.append((entry.get("client_type", ""), command.split(" ")[0]))
                if command == "PING STOP":
                    return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait(5)
    time.sleep(0.2)
    email_queue.enqueue_job("noop", {"i": 1}, **options)
    redis.Redis(port=server.port).execute_command("PING", "STOP")
    thread.join(5)
    return [s for s in seen if s[1] not in ("PING", "HELLO", "CLIENT")]  # the stop marker's own connection


def measure(jobs: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    server = RedisServer().start()
    try:
        point_at(server)
        from core.api.queues import email_queue

        email_queue.enqueue_job("noop", {})  # warm: the script is loaded, the health check cached
        client = server.client()
        for kind, options in KINDS.items():
            sent = watched(server, options)
            before = _commands(client)
            started = time.perf_counter()
            for i in range(jobs):
                email_queue.enqueue_job("noop", {"i": i}, **options)
            elapsed = time.perf_counter() - started
            out[kind] = {"round_trips": float(sum(1 for source, _ in sent if source != "lua")),
                         "commands_per_enqueue": (_commands(client) - before) / jobs,
                         "enqueues_per_s": jobs / elapsed,
                         "sent": " ".join(f"{'  ' if source == 'lua' else ''}{name}" for source, name in sent)}
    finally:
        server.cleanup()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; hiredis parser: {HIREDIS_AVAILABLE}")
    for kind, row in measure(args.jobs).items():
        print(f"{kind:14} round trips {row['round_trips']:.0f}, commands/enqueue {row['commands_per_enqueue']:.2f}, "
              f"one by one {row['enqueues_per_s']:,.0f}/s; sent: {row['sent']}")


if __name__ == "__main__":
    main()
