"""Adaptive, bounded prefetch: how many jobs a worker claims ahead of its free slots.

A claimed-ahead job waits in the worker while another worker might have run it, so it is only
worth it when the backlog is deep (a claim came back full) and the jobs are short. The depth
doubles after each full claim and falls to 0 at the first claim that comes back short (the
backlog is shallow: one job per free slot again). Two bounds hold at once:

* ``JOBS_WORKER_PREFETCH`` jobs at most (a count);
* ``JOBS_WORKER_PREFETCH_BUDGET_MS`` (5 ms) of work at most, at the jobs' recent mean duration:
  100 ms jobs are never claimed ahead, 0.1 ms no-ops up to the count bound.

Nothing is claimed ahead before a job has ended in this worker (its duration is unknown), nor
while a job in hand has already run longer than the budget. So a job claimed ahead waits about
5 ms at most in a busy worker, and a slow job does not hold others back behind it.
"""

from __future__ import annotations

SMOOTHING = 0.2  # weight of the newest duration in the running mean


class AdaptivePrefetch:
    """The number of jobs to claim ahead; see the module's docstring."""

    def __init__(self, limit: int, budget: float = 0.005) -> None:
        self.limit = max(0, limit)
        self.budget = budget  # s of work at most claimed ahead (at the jobs' mean duration)
        self.depth = 0
        self.mean: float | None = None  # s per job, running mean

    def claimed(self, asked: int, got: int) -> None:
        """A claim of ``asked`` jobs returned ``got``: full means a deep backlog."""
        if asked <= 0:
            return
        if got >= asked:
            self.depth = min(self.limit, max(1, self.depth * 2))
        else:
            self.depth = 0

    def ran(self, duration: float) -> None:
        self.mean = duration if self.mean is None else (1 - SMOOTHING) * self.mean + SMOOTHING * duration

    def ahead(self, running_for: float = 0.0) -> int:
        """Jobs to hold claimed ahead now. ``running_for``: how long the oldest job in hand has run;
        none is claimed ahead before a job has ended here (no duration known yet), nor while a job
        in hand has run longer than the budget (it may be a slow one)."""
        if self.depth <= 0 or self.mean is None or running_for > self.budget:
            return 0
        if self.mean > 0:
            return max(0, min(self.depth, int(self.budget / self.mean)))
        return self.depth
