"""Functions raw RQ runs in the benchmarks (imported by dotted path, as raw RQ does)."""

import time


def noop(**_kwargs: object) -> None:
    return None


def sleep_100ms(**_kwargs: object) -> None:
    time.sleep(0.1)
