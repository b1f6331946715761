"""Admin endpoints for operators: scheduler control, task metrics, and Prometheus ``/metrics``.

``/metrics`` needs the ``[metrics]`` extra (prometheus_client). It is imported when a scrape
comes, not with this module: without it the app imports and runs, ``/metrics`` answers 501 in
the JSON envelope naming ``pip install 'fikiri-jobs[metrics]'`` (see :func:`prometheus_missing`),
and ``FikiriJobs(app)`` logs one warning when it mounts the part.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from flask import Blueprint, Flask, Response

from core.api.queues import all_queues
from core.fallback.executor import get_fallback
from core.ops import audit
from core.platform.connection import redis_available
from core.queue import task_metrics
from core.schedule import heartbeat, periodic
from routes.common import current_identity, error, install_error_handlers, ok, require_admin
from routes.params import int_arg, name_value, str_arg

logger = logging.getLogger(__name__)

ops_bp = Blueprint("jobs_ops", __name__, url_prefix="/api/jobs")
install_error_handlers(ops_bp)
metrics_bp = Blueprint("jobs_metrics", __name__)
install_error_handlers(metrics_bp)


@ops_bp.get("/scheduler/status")
@require_admin
def scheduler_status():
    return ok({"jobs": periodic.list_periodic_jobs(), "scheduled_total": periodic.count_periodic_jobs()})


@ops_bp.post("/scheduler/<periodic_id>/pause")
@require_admin
def scheduler_pause(periodic_id: str):
    result = periodic.pause_periodic(name_value("periodic job id", periodic_id))
    audit.record("admin", "scheduler.pause", periodic_id, "api")
    return ok(result)


@ops_bp.post("/scheduler/<periodic_id>/resume")
@require_admin
def scheduler_resume(periodic_id: str):
    result = periodic.resume_periodic(name_value("periodic job id", periodic_id))
    audit.record("admin", "scheduler.resume", periodic_id, "api")
    return ok(result)


@ops_bp.post("/scheduler/<periodic_id>/run")
@require_admin
def scheduler_run(periodic_id: str):
    job_id = periodic.run_periodic_now(name_value("periodic job id", periodic_id))
    audit.record("admin", "scheduler.run", periodic_id, "api", detail=f"job {job_id}")
    return ok({"id": periodic_id, "job_id": job_id}, 202)


@ops_bp.delete("/scheduler/<periodic_id>")
@require_admin
def scheduler_remove(periodic_id: str):
    periodic.remove_periodic(name_value("periodic job id", periodic_id))
    audit.record("admin", "scheduler.remove", periodic_id, "api")
    return ok({"id": periodic_id, "removed": True})


@ops_bp.get("/monitor/stats")
@require_admin
def monitor_stats():
    task = str_arg("task")
    return ok({"tasks": task_metrics.get_task_stats(name_value("task", task) if task else None)})


@ops_bp.get("/monitor/<task>/history")
@require_admin
def monitor_history(task: str):
    limit = int_arg("limit", 20, 1, task_metrics.HISTORY_SIZE)
    return ok({"task": task, "executions": task_metrics.get_task_history(name_value("task", task), limit)})


@ops_bp.get("/monitor/failures")
@require_admin
def monitor_failures():
    limit = int_arg("limit", 50, 1, task_metrics.FAILURES_SIZE)
    hours = int_arg("hours", 24, 1, 24 * 30)
    return ok({"failures": task_metrics.get_recent_failures(limit, hours)})


METRICS_INSTALL = "pip install 'fikiri-jobs[metrics]'"


def prometheus_missing() -> str | None:
    """None when prometheus_client imports; otherwise what /metrics answers (and FikiriJobs logs)."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError as exc:
        return (f"Prometheus metrics need prometheus_client, which is not installed ({exc}): "
                f"{METRICS_INSTALL}, or switch /metrics off with JOBS_MOUNT_METRICS=0")
    return None


class JobsCollector:
    """Reads Redis at scrape time: queue depths, per-task counts and durations, workers, mode."""

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        up = redis_available()
        fallback = GaugeMetricFamily("fikiri_jobs_fallback_mode", "1 while Redis is unreachable")
        fallback.add_metric([], 0 if up else 1)
        yield fallback
        pending = GaugeMetricFamily("fikiri_jobs_fallback_pending", "Unfinished jobs in the fallback spool")
        pending.add_metric([], get_fallback().pending_count())
        yield pending
        oldest = GaugeMetricFamily("fikiri_jobs_fallback_oldest_age_seconds", "Age of the oldest unfinished spooled job")
        oldest.add_metric([], get_fallback().oldest_age() or 0.0)
        yield oldest
        if not up:
            return
        depth = GaugeMetricFamily("fikiri_jobs_queue_jobs", "Jobs per queue and state", labels=["queue", "state"])
        workers = GaugeMetricFamily("fikiri_jobs_workers", "Workers serving each queue", labels=["queue"])
        latency = GaugeMetricFamily("fikiri_queue_latency_seconds", "Age of the oldest job waiting to run (0: none)",
                                    labels=["queue"])
        by_priority = GaugeMetricFamily("fikiri_queue_priority_latency_seconds",
                                        "Age of the oldest job waiting in each priority list", labels=["queue", "priority"])
        group_waiting = GaugeMetricFamily("fikiri_group_waiting_jobs", "Jobs waiting in the job groups with the "
                                          "most waiting (top 5 per queue)", labels=["queue", "group"])
        group_running = GaugeMetricFamily("fikiri_group_running_jobs", "Jobs running of those groups",
                                          labels=["queue", "group"])
        group_age = GaugeMetricFamily("fikiri_group_oldest_age_seconds", "Age of those groups' oldest waiting job",
                                      labels=["queue", "group"])
        for queue in all_queues():
            stats = queue.get_stats()
            for row in stats["top_groups"]:
                group_waiting.add_metric([queue.short_name, row["group"]], row["waiting"])
                group_running.add_metric([queue.short_name, row["group"]], row["running"])
                group_age.add_metric([queue.short_name, row["group"]], row["oldest_age"])
            for state in ("pending", "delayed", "active", "completed", "failed", "canceled"):
                depth.add_metric([queue.short_name, state], stats[f"{state}_jobs"])
            workers.add_metric([queue.short_name], stats["workers"])
            latency.add_metric([queue.short_name], stats["latency_seconds"])
            for priority, age in stats["latency_by_priority"].items():
                by_priority.add_metric([queue.short_name, priority], age)
        yield depth
        yield workers
        yield latency
        yield by_priority
        yield group_waiting
        yield group_running
        yield group_age
        scheduler = heartbeat.scheduler_status()
        alive = GaugeMetricFamily("fikiri_scheduler_alive", "1 while a periodic scheduler ticked within 3 intervals")
        alive.add_metric([], 1 if scheduler["alive"] else 0)
        yield alive
        tick = GaugeMetricFamily("fikiri_scheduler_last_tick_seconds",
                                 "When a periodic scheduler last ticked (epoch s; 0: never)")
        tick.add_metric([], scheduler["last_tick"] or 0.0)
        yield tick
        runs = CounterMetricFamily("fikiri_jobs_task_executions", "Executions per task and outcome",
                                   labels=["task", "outcome"])
        histogram = HistogramMetricFamily("fikiri_jobs_task_duration_seconds", "Execution time per task",
                                          labels=["task"])
        for task, stats in task_metrics.get_task_stats().items():
            runs.add_metric([task, "succeeded"], stats["succeeded"])
            runs.add_metric([task, "failed"], stats["failed"])
            runs.add_metric([task, "expired"], stats["expired"])  # never ran: not started before its expires
            buckets = task_metrics.get_duration_buckets(task)
            cumulative, points = 0, []
            for bound in task_metrics.DURATION_BUCKETS:
                cumulative += buckets.get(str(bound), 0)
                points.append((str(bound), cumulative))
            points.append(("+Inf", cumulative + buckets.get("+Inf", 0)))
            histogram.add_metric([task], points, sum_value=stats["total_duration"])
        yield runs
        yield histogram


@functools.cache
def _metrics_registry() -> Any:
    """The registry of the one collector, made at the first scrape (prometheus_client is there)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector())
    return registry


@metrics_bp.get("/metrics")
def metrics():
    """Prometheus text format; needs the admin token like every operator view. Without the
    ``[metrics]`` extra: 501 ``not_installed`` in the JSON envelope, naming the install line."""
    if not current_identity().is_admin:
        from core.errors import ForbiddenError

        raise ForbiddenError("/metrics needs the admin token")
    missing = prometheus_missing()
    if missing is not None:
        return error("not_installed", missing, 501)
    from prometheus_client import generate_latest

    return Response(generate_latest(_metrics_registry()), mimetype="text/plain; version=0.0.4")


def register_ops(app: Flask) -> None:
    app.register_blueprint(ops_bp)
    app.register_blueprint(metrics_bp)
