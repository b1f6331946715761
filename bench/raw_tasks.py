"""Functions raw RQ runs in the benchmarks (imported by dotted path, as raw RQ does)."""

from bench.tasks import noop, noop_result, sleep_io

sleep_100ms = sleep_io

__all__ = ["noop", "noop_result", "sleep_100ms", "sleep_io"]
