"""Ours against raw RQ, Celery, Dramatiq and Huey in one interleaved run (``python -m bench.run --peers``).

Scenarios, each on a fresh redis-server per system and round, workers as real processes:

- ``cpu``: N no-op jobs pre-enqueued, then drained by workers using the 2 cores; jobs/s between
  the first and the last job's run (start-up excluded), plus Redis commands and round trips per
  job while draining (``INFO commandstats`` / ``total_reads_processed`` after ``CONFIG RESETSTAT``).
- ``io``: the same with jobs that sleep 100 ms, with 32 threads where the system has threads.
- ``latency``: one job at a time into an idle worker; enqueue->run (the task's own clock) and
  enqueue->result (the system's client sees it finished, polled every 0.2 ms).
- ``enqueue``: one-by-one and bulk enqueue rates, and Redis commands per enqueued job.
- ``memory``: ``dataset.bytes`` (MEMORY STATS) delta per pending job with a 100-byte payload.

Rounds are interleaved (every system once per round, order rotated each round); the report gives
the median of the rounds with min-max, because the machine is shared and noisy.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.marks import Marks
from bench.redis_probe import FreshRedis
from bench.report import PEERS, Metric, Table, family, fmt, ratio, render
from bench.systems import PAYLOAD_100B, CeleryPeer, DramatiqPeer, HueyPeer, OurConfig, Ours, RawRQ, System, Workers

DEFAULT_OUR_CONFIGS = ["simple x2", "simple x2 prefetch 10", "threaded 2x4", "prefork 1x2", "fork 1"]
DEFAULT_OUR_IO_CONFIGS = ["threaded 1x32"]
Result = dict[str, float | None]


@dataclass
class Plan:
    """How big and how many: ``quick`` fits in about three minutes, full takes longer."""

    rounds: int
    n_cpu: int
    n_io: int
    n_latency: int
    n_enqueue: int
    n_memory: int
    our_configs: list[str] = field(default_factory=lambda: list(DEFAULT_OUR_CONFIGS))
    our_io_configs: list[str] = field(default_factory=lambda: list(DEFAULT_OUR_IO_CONFIGS))
    issue22: bool = False  # the default worker against every peer's default (docs/BENCHMARKS.md, issue 22)

    @classmethod
    def make(cls, quick: bool, our_configs: list[str] | None, our_io_configs: list[str] | None) -> Plan:
        sizes = (1, 500, 200, 50, 500, 2_000) if quick else (3, 2_000, 1_000, 200, 2_000, 10_000)
        return cls(*sizes, our_configs=our_configs or list(DEFAULT_OUR_CONFIGS),
                   our_io_configs=our_io_configs or list(DEFAULT_OUR_IO_CONFIGS))

    def jobs_for(self, scenario: str, system: System) -> int:
        """Slow configurations get fewer jobs (their rate is steady after a few dozen)."""
        n = self.n_cpu if scenario == "cpu" else self.n_io
        slow = "fork" in system.config or (scenario == "io" and isinstance(system, RawRQ))
        return max(50, n // 10) if slow else n


def systems_for(scenario: str, plan: Plan) -> list[System]:
    """Each system in its fastest sensible configuration for the scenario (see docs/BENCHMARKS.md)."""
    if plan.issue22:
        return systems_issue22(scenario, plan)
    if scenario in ("cpu", "latency"):
        ours: list[System] = [Ours(c) for c in plan.our_configs]
        raw_extra: list[System] = [RawRQ("worker (fork)")] if scenario == "cpu" else [RawRQ("simple worker")]
        return [*ours, RawRQ("pool -n 2 SimpleWorker"), *raw_extra, CeleryPeer("prefork -c 2"),
                DramatiqPeer("default -p 2 -t 8"), HueyPeer("thread -w 2")]
    if scenario == "io":
        return [*(Ours(c) for c in plan.our_io_configs), RawRQ("pool -n 2 SimpleWorker"), CeleryPeer("threads -c 32"),
                DramatiqPeer("threads -p 1 -t 32"), HueyPeer("thread -w 32")]
    return [Ours("simple"), RawRQ(), CeleryPeer(), DramatiqPeer(), HueyPeer()]


ISSUE22_OUR_CONFIGS = ["default"]  # plus "default-before" when FIKIRI_BENCH_BEFORE_ROOT names an older checkout


def systems_issue22(scenario: str, plan: Plan) -> list[System]:
    """Issue 22: what a user gets with no flags against each peer's default on these 2 cores
    (Dramatiq ``-p 2 -t 8``, Huey ``-w 2 -k process``), raw RQ alongside."""
    if scenario == "cpu":
        return [*(Ours(c) for c in plan.our_configs), RawRQ("pool -n 2 SimpleWorker"),
                DramatiqPeer("default -p 2 -t 8"), HueyPeer("process -w 2")]
    if scenario == "latency":
        return [*(Ours(c) for c in plan.our_configs), RawRQ("simple worker"), DramatiqPeer("default -p 2 -t 8"),
                HueyPeer("process -w 2")]
    return [Ours("default"), RawRQ(), DramatiqPeer(), HueyPeer("process -w 2")]


# --- one measurement ------------------------------------------------------------------------------
@dataclass
class Session:
    server: FreshRedis
    marks: Marks
    tmp: Path


@contextmanager
def session(system: System, slots: int) -> Iterator[Session]:
    """A fresh redis-server, a marks board and the system's client pointed at them."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    server = FreshRedis()
    marks = Marks(tmp, slots)
    try:
        system.connect(server.url)
        yield Session(server, marks, tmp)
    finally:
        system.disconnect()
        server.stop()
        marks.close()
        shutil.rmtree(tmp, ignore_errors=True)


def start_workers(system: System, s: Session, extra: list[str] | None = None) -> Workers:
    return Workers(system, s.server.url, s.marks.path, s.tmp / "worker.log", extra)


def alive_check(workers: Workers) -> Callable[[], None]:
    def check() -> None:
        code = workers.exited()
        if code is not None:
            raise RuntimeError(f"workers exited with {code}: {workers.log_tail(3)}")
    return check


def throughput(system: System, task: str, n: int) -> Result:
    """Pre-enqueue n jobs, start the workers, time first to last run; count Redis work meanwhile."""
    with session(system, n) as s:
        system.send_bulk(task, range(n))
        s.server.reset()
        workers = start_workers(system, s)
        try:
            stamps = s.marks.wait_all(0, n, timeout=60 + n * 0.2, check=alive_check(workers))
            used = s.server.usage()
        finally:
            workers.stop()
    return {"jobs_per_s": (n - 1) / max(max(stamps) - min(stamps), 1e-6),
            "cmds_per_job": used.calls / n, "reads_per_job": used.reads / n}


def wait_ready(system: System, handle: Any, timeout: float, check: Callable[[], None]) -> float:
    """Poll ``system.ready`` every 0.2 ms; return when it first said yes."""
    deadline = time.monotonic() + timeout
    polls = 0
    while not system.ready(handle):
        polls += 1
        if polls % 1000 == 0:
            check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"no result within {timeout:.0f}s")
        time.sleep(0.0002)
    return time.time()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def latency(system: System, n: int, warmup: int = 3) -> Result:
    """One job at a time into an idle worker: enqueue->run and enqueue->result, p50 and p99 in ms."""
    with session(system, n + warmup) as s:
        workers = start_workers(system, s)
        check = alive_check(workers)
        try:
            for i in range(warmup):
                wait_ready(system, system.send("noop_result", i), 60, check)
            to_run, to_result = [], []
            for i in range(warmup, warmup + n):
                time.sleep(0.002)  # let the worker go back to waiting
                t0 = time.time()
                done = wait_ready(system, system.send("noop_result", i), 30, check)
                to_run.append(s.marks.at(i) - t0)
                to_result.append(done - t0)
        finally:
            workers.stop()
    return {"result_p50_ms": percentile(to_result, 0.5) * 1e3, "result_p99_ms": percentile(to_result, 0.99) * 1e3,
            "run_p50_ms": percentile(to_run, 0.5) * 1e3, "run_p99_ms": percentile(to_run, 0.99) * 1e3}


def enqueue(system: System, n: int) -> Result:
    """Enqueue n jobs one by one (and count Redis work per job), then n more with the bulk API."""
    with session(system, 1) as s:
        system.send("noop", 0)
        s.server.reset()
        start = time.perf_counter()
        for i in range(1, n + 1):
            system.send("noop", i)
        one = n / (time.perf_counter() - start)
        used = s.server.usage()
        start = time.perf_counter()
        has_bulk = system.send_bulk("noop", range(n + 1, 2 * n + 1))
        bulk = n / (time.perf_counter() - start)
    return {"one_by_one_per_s": one, "bulk_per_s": bulk if has_bulk else None,
            "enq_cmds_per_job": used.calls / n, "enq_reads_per_job": used.reads / n}


def memory(system: System, n: int) -> Result:
    """Redis ``dataset.bytes`` growth per pending job, n jobs with a 100-byte payload."""
    with session(system, 1) as s:
        system.send("noop", 0, PAYLOAD_100B)
        before = s.server.used_memory()
        for start in range(1, n + 1, 1000):
            system.send_bulk("noop", range(start, min(n + 1, start + 1000)), PAYLOAD_100B)
        return {"bytes_per_job": (s.server.used_memory() - before) / n}


# --- the run --------------------------------------------------------------------------------------
def preflight(config: str) -> str | None:
    """Start our worker with this config in burst mode on an empty queue; why it failed, or None."""
    try:
        system = Ours(config)
    except ValueError as exc:
        return str(exc)
    with session(system, 1) as s:
        workers = start_workers(system, s, ["--burst"])
        try:
            code = workers.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001 - a hang is a failure too
            code = -1
        finally:
            workers.stop()
        return None if code == 0 else f"exit {code}: {workers.log_tail(2).strip() or 'no output'}"


def usable_configs(configs: list[str]) -> list[str]:
    """Keep the configs our CLI accepts; say plainly which ones were skipped and why."""
    kept = []
    for config in configs:
        reason = preflight(config)
        if reason is None:
            kept.append(config)
        else:
            print(f"SKIP ours {config!r}: the worker CLI rejected it ({reason})", flush=True)
    return kept


def run_one(scenario: str, system: System, plan: Plan) -> Result:
    if scenario == "cpu":
        return throughput(system, "noop", plan.jobs_for("cpu", system))
    if scenario == "io":
        return throughput(system, "sleep", plan.jobs_for("io", system))
    if scenario == "latency":
        return latency(system, plan.n_latency)
    if scenario == "enqueue":
        return enqueue(system, plan.n_enqueue)
    return memory(system, plan.n_memory)


SCENARIOS = ("enqueue", "memory", "cpu", "io", "latency")
Runs = dict[tuple[str, str], list[Result]]


def run_all(plan: Plan) -> tuple[Runs, dict[tuple[str, str], str]]:
    """Every scenario x system, ``plan.rounds`` times, system order rotated each round."""
    runs: Runs = {}
    errors: dict[tuple[str, str], str] = {}
    for r in range(plan.rounds):
        for scenario in (s for s in SCENARIOS if not (plan.issue22 and s == "io")):
            systems = systems_for(scenario, plan)
            shift = r % len(systems)
            for system in systems[shift:] + systems[:shift]:
                key = (scenario, system.label)
                try:
                    result = run_one(scenario, system, plan)
                except Exception as exc:  # noqa: BLE001 - one broken run must not end the others
                    errors[key] = f"{type(exc).__name__}: {exc}"
                    print(f"[round {r + 1}] {scenario:8} {system.label:34} FAILED {errors[key]}", flush=True)
                    continue
                runs.setdefault(key, []).append(result)
                shown = "  ".join(f"{k} {v:,.2f}" for k, v in result.items() if v is not None)
                print(f"[round {r + 1}] {scenario:8} {system.label:34} {shown}", flush=True)
    return runs, errors


def medians(runs: Runs) -> dict[tuple[str, str], dict[str, tuple[float, float, float] | None]]:
    """(median, min, max) of each metric over the rounds."""
    out: dict[tuple[str, str], dict[str, tuple[float, float, float] | None]] = {}
    for key, results in runs.items():
        out[key] = {}
        for metric in results[0]:
            values = [r[metric] for r in results if r.get(metric) is not None]
            out[key][metric] = (statistics.median(values), min(values), max(values)) if values else None
    return out


def our_config_class(label: str) -> str:
    return OurConfig.parse(label.removeprefix("ours ")).worker_class


# --- report ---------------------------------------------------------------------------------------
def _simple_or_threaded(label: str) -> bool:
    return not label.startswith("ours") or our_config_class(label) in ("simple", "threaded")


METRICS = [
    Metric("no-op throughput, 2 cores (jobs/s)", "cpu", "jobs_per_s", True),
    Metric("100 ms I/O jobs, 32 threads (jobs/s)", "io", "jobs_per_s", True),
    Metric("enqueue→result p50, idle worker (ms)", "latency", "result_p50_ms", False),
    Metric("enqueue→result p99 (ms)", "latency", "result_p99_ms", False),
    Metric("enqueue→run p50 (ms)", "latency", "run_p50_ms", False),
    Metric("enqueue one by one (jobs/s)", "enqueue", "one_by_one_per_s", True),
    Metric("bulk enqueue (jobs/s)", "enqueue", "bulk_per_s", True),
    Metric("Redis commands per enqueue", "enqueue", "enq_cmds_per_job", False),
    Metric("Redis commands per job, processing", "cpu", "cmds_per_job", False),
    Metric("round trips per job, processing", "cpu", "reads_per_job", False),
    Metric("Redis bytes per pending job (100-byte payload)", "memory", "bytes_per_job", False),
]


def _best_of(table: Table, scenario: str, key: str, pick: Callable[[str], bool],
             higher: bool) -> tuple[float, str] | None:
    """Best median of ``key`` among the labels ``pick`` accepts."""
    found = [(stat[0], label) for (s, label), stats in table.items()
             if s == scenario and pick(label) and (stat := stats.get(key)) is not None]
    return (max(found) if higher else min(found)) if found else None


def _is(prefix: str) -> Callable[[str], bool]:
    return lambda label: label.startswith(prefix)


def _ours_class(*classes: str) -> Callable[[str], bool]:
    return lambda label: label.startswith("ours ") and our_config_class(label) in classes


def targets(table: Table) -> list[tuple[str, str, bool | None]]:
    """Issue 10's speed targets, each checked against this run's medians (None: not measurable)."""
    def get(scenario: str, key: str, pick: Callable[[str], bool], higher: bool = True) -> tuple[float, str] | None:
        return _best_of(table, scenario, key, pick, higher)

    out: list[tuple[str, str, bool | None]] = []
    ours, celery = get("cpu", "jobs_per_s", _is("ours")), get("cpu", "jobs_per_s", _is("Celery"))
    out.append(("no-op throughput ≥ 2,000 jobs/s and above Celery",
                f"{fmt(ours and ours[0])} ({ours and ours[1]}) vs Celery {fmt(celery and celery[0])}",
                None if not (ours and celery) else ours[0] >= 2000 and ours[0] > celery[0]))
    ours_io = get("io", "jobs_per_s", _is("ours"))
    peer_io = get("io", "jobs_per_s", lambda label: family(label) in PEERS)
    out.append(("I/O-bound ≥ best peer", f"{fmt(ours_io and ours_io[0])} vs {peer_io and peer_io[1]} "
                f"{fmt(peer_io and peer_io[0])}", None if not (ours_io and peer_io) else ours_io[0] >= peer_io[0]))
    lat = get("latency", "result_p50_ms", _ours_class("simple", "threaded"), higher=False)
    out.append(("enqueue→result p50 ≤ 2 ms, idle simple or threaded worker",
                f"{fmt(lat and lat[0])} ms ({lat and lat[1]})", None if not lat else lat[0] <= 2.0))
    fork, raw_fork = get("cpu", "jobs_per_s", _ours_class("fork")), get("cpu", "jobs_per_s", _is("raw RQ worker (fork)"))
    out.append(("fork worker no slower than today (today: at parity with `rq worker`; here ≥ 0.9×)",
                f"{fmt(fork and fork[0])} vs rq worker {fmt(raw_fork and raw_fork[0])}",
                None if not (fork and raw_fork) else fork[0] >= 0.9 * raw_fork[0]))
    for key, title, factor in (("one_by_one_per_s", "enqueue one by one ≥ 1.3× raw RQ", 1.3),
                               ("bulk_per_s", "bulk enqueue ≥ raw `enqueue_many`", 1.0)):
        o, r = get("enqueue", key, _is("ours")), get("enqueue", key, _is("raw RQ"))
        out.append((title, f"{fmt(ratio(o, r and r[0]))}×", None if not (o and r) else o[0] >= factor * r[0]))
    mem, dram = get("memory", "bytes_per_job", _is("ours"), False), get("memory", "bytes_per_job", _is("Dramatiq"), False)
    out.append(("Redis bytes per pending job ≤ Dramatiq's", f"{fmt(mem and mem[0])} vs {fmt(dram and dram[0])}",
                None if not (mem and dram) else mem[0] <= dram[0]))
    enq = get("enqueue", "enq_cmds_per_job", _is("ours"), False)
    proc = get("cpu", "cmds_per_job", _ours_class("simple", "threaded"), False)
    total = enq[0] + proc[0] if enq and proc else None
    out.append(("≤ 15 Redis commands per job, simple/threaded (enqueue + processing)",
                f"{fmt(total)} ({fmt(enq and enq[0])} + {fmt(proc and proc[0])}, {proc and proc[1]})",
                None if total is None else total <= 15))
    return out


def targets_issue22(table: Table) -> list[tuple[str, str, bool | None]]:
    """Issue 22's targets for the default worker (``ours default``), against this run's medians."""
    def stat(scenario: str, label: str, key: str) -> float | None:
        value = table.get((scenario, label), {}).get(key)
        return value[0] if value else None

    ours = "ours default"
    out: list[tuple[str, str, bool | None]] = []
    rate = stat("cpu", ours, "jobs_per_s")
    peers = [(stat("cpu", label, "jobs_per_s"), label) for label in ("Dramatiq default -p 2 -t 8", "Huey process -w 2")]
    peers = [(v, label) for v, label in peers if v is not None]
    top = max(peers) if peers else None
    out.append(("no-op throughput of `fikiri-worker` (no flags) ≥ 1.2× the best peer's default",
                f"{fmt(rate)} vs {top and top[1]} {fmt(top and top[0])}: {fmt(ratio((rate, ours), top and top[0]) if rate else None)}×",
                None if not (rate and top) else rate >= 1.2 * top[0]))
    enq_c, enq_r = stat("enqueue", "ours default", "enq_cmds_per_job"), stat("enqueue", "ours default", "enq_reads_per_job")
    job_c, job_r = stat("cpu", ours, "cmds_per_job"), stat("cpu", ours, "reads_per_job")
    if None not in (enq_c, enq_r, job_c, job_r):
        out.append(("≤ 1 round trip per job, enqueue included", f"{fmt(enq_r + job_r)} ({fmt(enq_r)} + {fmt(job_r)})",
                    enq_r + job_r <= 1.0))
        out.append(("≤ 12 Redis commands per job, enqueue included", f"{fmt(enq_c + job_c)} ({fmt(enq_c)} + {fmt(job_c)})",
                    enq_c + job_c <= 12))
    for key, title, factor in (("result_p50_ms", "idle enqueue→result p50 ≤ 0.7× Huey's", 0.7),
                               ("result_p99_ms", "idle enqueue→result p99 ≤ Huey's", 1.0)):
        o, h = stat("latency", ours, key), stat("latency", "Huey process -w 2", key)
        out.append((title, f"{fmt(o)} vs {fmt(h)} ms: {fmt(o / h if o and h else None)}×",
                    None if not (o and h) else o <= factor * h))
    o, h = stat("enqueue", "ours default", "one_by_one_per_s"), stat("enqueue", "Huey process -w 2", "one_by_one_per_s")
    out.append(("enqueue one by one ≥ Huey's", f"{fmt(o)} vs {fmt(h)} jobs/s", None if not (o and h) else o >= h))
    m, d = stat("memory", "ours default", "bytes_per_job"), stat("memory", "Dramatiq default -p 2 -t 8", "bytes_per_job")
    if d is None:
        d = next((v[0] for (s, label), stats in table.items() if s == "memory" and label.startswith("Dramatiq")
                  and (v := stats.get("bytes_per_job"))), None)
    out.append(("Redis bytes per pending job ≤ Dramatiq's", f"{fmt(m)} vs {fmt(d)}", None if not (m and d) else m <= d))
    return out


def machine() -> dict[str, str]:
    """What the numbers were measured on, and how busy it was."""
    import os
    import platform
    import subprocess
    from importlib.metadata import version

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    server = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    packages = ("rq", "redis", "hiredis", "celery", "kombu", "dramatiq", "huey")
    return {"cores": str(os.cpu_count()), "cpu": cpu, "python": platform.python_version(),
            "redis_server": next((w for w in server if w.startswith("v=")), "?").removeprefix("v="),
            "packages": ", ".join(f"{p} {version(p)}" for p in packages),
            "loadavg": " ".join(Path("/proc/loadavg").read_text().split()[:3])}


def header(plan: Plan, quick: bool, started: float, host: dict[str, str]) -> list[str]:
    return [f"## Peers run {time.strftime('%Y-%m-%d %H:%M', time.localtime(started))} "
            f"({'quick' if quick else 'full'}, {plan.rounds} round(s), {time.time() - started:.0f} s)", "",
            f"{host['cores']} cores ({host['cpu']}), Python {host['python']}, Redis {host['redis_server']}; "
            f"{host['packages']}. Load average at the end {host['loadavg']} — the machine is shared, so "
            "absolute numbers are noisy; ratios come from the same interleaved run.",
            f"Jobs: cpu {plan.n_cpu} (fork configs and raw RQ's I/O pool a tenth, at least 50), io {plan.n_io}, "
            f"latency {plan.n_latency} samples, enqueue {plan.n_enqueue}, memory {plan.n_memory}."]


def main(quick: bool, our_configs: list[str] | None, our_io_configs: list[str] | None, issue22: bool = False,
         rounds: int | None = None) -> str:
    """Run everything, print the markdown report and write it (and the raw runs) to bench/results/."""
    import json

    started = time.time()
    if issue22 and not our_configs:
        our_configs = ISSUE22_OUR_CONFIGS + (["default-before"] if os.environ.get("FIKIRI_BENCH_BEFORE_ROOT") else [])
    plan = Plan.make(quick, our_configs, our_io_configs)
    plan.issue22 = issue22
    if rounds:
        plan.rounds = rounds
    plan.our_configs = usable_configs(plan.our_configs)
    plan.our_io_configs = [] if issue22 else usable_configs(plan.our_io_configs)
    runs, errors = run_all(plan)
    table = medians(runs)
    checks = targets_issue22(table) if issue22 else targets(table)
    text = render(table, errors, METRICS, checks, header(plan, quick, started, machine()))
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"peers-{stamp}.md").write_text(text + "\n")
    (results / f"peers-{stamp}.json").write_text(json.dumps(
        {"runs": {f"{s} | {label}": r for (s, label), r in runs.items()},
         "errors": {f"{s} | {label}": e for (s, label), e in errors.items()}}, indent=2))
    print("\n" + text + f"\n\nreport: {results / f'peers-{stamp}.md'}")
    return text
