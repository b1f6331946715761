"""Job groups in the fallback spool (Redis down), measured: the claim's cost and the starvation it ends.

    .venv/bin/python -m bench.spool_groups [--rounds N]

Runs the spool's own claim (``core.fallback.spool.Spool.claim``, what every fallback runner thread
calls) on a fresh SQLite file per scenario, claim then end, one thread: the spool's write lock makes
claims one at a time whatever the number of runners, so this is the claim's own price.

* **Cost.** Median and p99 of one claim with 505 jobs waiting: ungrouped (the baseline: one member
  of the rotation, FIFO within it), one tenant's 500 plus another's 5, and 100 tenants of 5; and a
  claim that finds nothing when 1,000 groups are all at their ``group_concurrency`` (every group
  passed: the worst case).
* **Starvation.** One tenant's 500 jobs are spooled, then another tenant's 5: how many claims go by
  before the light tenant's last job is claimed, with ``group=<tenant>`` and without.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from core.fallback.spool import Spool
from core.queue.job_model import Job, JobStatus


def _spool(layout: list[tuple[str | None, int]], concurrency: int | None = None) -> Spool:
    spool = Spool(Path(tempfile.mkdtemp(prefix="spool-groups-")) / "spool.db")
    for group, count in layout:
        for i in range(count):
            job = Job(job_id=f"{group}-{i}", queue="ai", task_name="noop", status=JobStatus.PENDING, payload={},
                      max_retries=0, created_at=time.time())
            spool.add(job, time.time(), 1, None, 1_000_000, group=group, group_concurrency=concurrency)
    return spool


def claim_cost(layout: list[tuple[str | None, int]], claims: int = 300) -> tuple[float, float]:
    """(median, p99) ms of a claim, each followed by the job's end."""
    spool, took = _spool(layout), []
    for _ in range(claims):
        started = time.perf_counter()
        job, _abandoned = spool.claim("bench", 30)
        took.append(time.perf_counter() - started)
        spool.end(job.id, "bench", "completed", "null", None)
    took.sort()
    return statistics.median(took) * 1e3, took[int(len(took) * 0.99)] * 1e3


def worst_case(groups: int = 1000, rounds: int = 20) -> float:
    """Median ms of a claim that passes every group (all at their group_concurrency of 1)."""
    spool = _spool([(f"g{i}", 2) for i in range(groups)], concurrency=1)
    for _ in range(groups):
        assert spool.claim("bench", 300)[0] is not None
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        assert spool.claim("bench", 300)[0] is None
        took.append(time.perf_counter() - started)
    return statistics.median(took) * 1e3


def starvation(grouped: bool) -> int:
    """Claims made until the light tenant's 5th job is claimed (500 heavy jobs spooled first)."""
    spool = _spool([("heavy" if grouped else None, 500)])
    for i in range(5):
        job = Job(job_id=f"light-{i}", queue="ai", task_name="noop", status=JobStatus.PENDING, payload={},
                  max_retries=0, created_at=time.time())
        spool.add(job, time.time(), 1, None, 1_000_000, group="light" if grouped else None)
    seen = 0
    for claims in range(1, 506):
        job, _abandoned = spool.claim("bench", 30)
        spool.end(job.id, "bench", "completed", "null", None)
        seen += job.id.startswith("light-")
        if seen == 5:
            return claims
    raise AssertionError("the light tenant's jobs were never all claimed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    layouts = {"ungrouped, 505 waiting": [(None, 505)], "500 + 5 in two groups": [("heavy", 500), ("light", 5)],
               "100 groups x 5": [(f"t{i}", 5) for i in range(100)] + [(None, 5)]}
    for name, layout in layouts.items():
        rounds = [claim_cost(layout) for _ in range(args.rounds)]
        print(f"claim, {name:24s} median {statistics.median(r[0] for r in rounds):.3f} ms "
              f"(rounds {', '.join(f'{r[0]:.3f}' for r in rounds)}), p99 {max(r[1] for r in rounds):.3f} ms")
    print(f"claim passing 1,000 groups at their limit: {worst_case():.2f} ms median")
    print(f"claims until the light tenant's 5 jobs ran: with groups {starvation(True)}, "
          f"without {starvation(False)}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
