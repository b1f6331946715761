"""Failure-rate alerts: a periodic check of every task's recent attempts.

For each task with metrics, the attempts that ended within ``JOBS_ALERT_WINDOW`` seconds (among
its last 100, from :func:`core.queue.task_metrics.get_task_history`) are counted; failed, retrying and
abandoned attempts are failures. At ``JOBS_ALERT_MIN_ATTEMPTS`` attempts or more and a share of
failures at or above ``JOBS_ALERT_FAILURE_RATE``, the task is in an incident.

One incident sends one alert: the first check that sees it sets ``fikiri:alert:<task>`` with
``SET NX`` (so two checks at once cannot both send) and queues the mail to the operators
(``send_email`` jobs to ``JOBS_ALERT_TO``, default ``JOBS_DIGEST_TO``) and, when
``JOBS_ALERT_WEBHOOK_URL`` is set, a ``deliver_alert_webhook`` job (the webhook still reaches
someone when the failing task is ``send_email`` itself). Every later check that still sees the
incident renews the key's expiry (``JOBS_ALERT_COOLDOWN`` + one check interval), so the key ends a
cooldown after the last check that saw the incident; the next incident after that alerts again.

The same channel carries the "scheduler silent" alert (:func:`check_scheduler_liveness`, one per
incident, see core/schedule/heartbeat.py).
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import requests

from core.api.queues import email_queue
from core.config import get_settings
from core.platform import keys
from core.platform.connection import get_redis
from core.platform.http import UpstreamError, request_with_backoff
from core.queue import task_metrics
from core.schedule import heartbeat

logger = logging.getLogger(__name__)

FAILURES = frozenset({"failed", "retrying", "abandoned"})
COUNTED = FAILURES | {"completed"}


def failure_rate(task: str, window: float, now: float | None = None) -> dict[str, Any]:
    """``{"task", "attempts", "failures", "rate"}`` over the attempts that ended in the window."""
    since = (now or time.time()) - window
    recent = [h["status"] for h in task_metrics.get_task_history(task) if h["finished_at"] >= since]
    attempts = sum(1 for status in recent if status in COUNTED)
    failures = sum(1 for status in recent if status in FAILURES)
    return {"task": task, "attempts": attempts, "failures": failures,
            "rate": round(failures / attempts, 4) if attempts else 0.0}


def _in_incident(rate: dict[str, Any]) -> bool:
    settings = get_settings()
    return rate["attempts"] >= settings.alert_min_attempts and rate["rate"] >= settings.alert_failure_rate


def _message(rate: dict[str, Any]) -> tuple[str, str]:
    settings = get_settings()
    subject = f"[Fikiri Jobs] {rate['task']}: {rate['rate']:.0%} of attempts failing"
    failures = [f for f in task_metrics.get_recent_failures(limit=500, hours=settings.alert_window / 3600)
                if f["task"] == rate["task"]][:5]
    lines = [f"Task {rate['task']}: {rate['failures']} of {rate['attempts']} attempts failed in the last "
             f"{settings.alert_window} s (threshold {settings.alert_failure_rate:.0%}).",
             f"No other alert for this task until {settings.alert_cooldown} s after the failures stop.",
             "", "Newest failures:"]
    lines += [f"  {f['job_id']}: {f.get('error', '')}" for f in failures] or ["  (none recorded)"]
    return subject, "\n".join(lines)


def _send(rate: dict[str, Any], incident: str) -> list[str]:
    """Queue the alert's mail and webhook jobs; returns their ids."""
    settings = get_settings()
    subject, body = _message(rate)
    return _notify(subject, body, incident, {"event": "task.failure_rate", **rate,
                                             "threshold": settings.alert_failure_rate, "window": settings.alert_window})


def _notify(subject: str, body: str, incident: str, event: dict[str, Any]) -> list[str]:
    """The alert channel: a ``send_email`` job per operator and, when JOBS_ALERT_WEBHOOK_URL is set,
    a ``deliver_alert_webhook`` job with ``event`` (plus ``subject`` and ``at``); returns their ids."""
    settings = get_settings()
    job_ids = []
    for index, to in enumerate(settings.alert_to or (settings.digest_to,)):
        job_ids.append(email_queue.enqueue_job("send_email", {"to": to, "subject": subject, "body": body},
                                               job_id=f"alert-{incident}-mail-{index}"))
    if settings.alert_webhook_url:
        event = {"event": event["event"], "subject": subject, "at": time.time(), **event}
        job_ids.append(email_queue.enqueue_job("deliver_alert_webhook", {"event": event},
                                               job_id=f"alert-{incident}-webhook"))
    return job_ids


def check_failure_rates() -> dict[str, Any]:
    """The periodic check: alert once per incident for each task over the threshold."""
    settings = get_settings()
    connection = get_redis()
    now = time.time()
    tasks = sorted(n.decode() for n in connection.smembers(task_metrics.tasks_key()))
    rates = [failure_rate(task, settings.alert_window, now) for task in tasks]
    firing = [r for r in rates if _in_incident(r)]
    alerts = []
    ttl = settings.alert_cooldown + settings.alert_check_interval  # outlives the gap between two checks
    for rate in firing:
        key = keys.alert(rate["task"])
        incident = hashlib.sha256(f"{rate['task']}\0{now}".encode()).hexdigest()[:16]
        if connection.set(key, incident, nx=True, ex=ttl):
            logger.error("ALERT task %s: %d of %d attempts failed in %d s; notifying operators",
                         rate["task"], rate["failures"], rate["attempts"], settings.alert_window)
            alerts.append({**rate, "incident": incident, "jobs": _send(rate, incident)})
        else:
            connection.expire(key, ttl)
    return {"checked": len(tasks), "firing": [r["task"] for r in firing], "alerts": alerts}


def check_scheduler_liveness() -> dict[str, Any]:
    """Alert once per incident when no periodic scheduler has ticked for 3 of its intervals
    (core/schedule/heartbeat.py). Enqueued by the workers' maintenance sweep, since a dead scheduler
    enqueues no periodic check; the marker ``fikiri:scheduler:alert`` (``SET NX``) makes one alert per
    incident and is renewed by every check that still sees the silence, so it ends a cooldown after."""
    connection = get_redis()
    status = heartbeat.scheduler_status(connection)
    if status["alive"] or status["last_tick"] is None:
        return {"scheduler": status, "alert": None}
    incident = heartbeat.incident_id(status)
    if not connection.set(keys.scheduler_alert(), incident, nx=True, ex=heartbeat.alert_ttl()):
        connection.expire(keys.scheduler_alert(), heartbeat.alert_ttl())
        return {"scheduler": status, "alert": None}
    last = datetime.fromtimestamp(status["last_tick"], UTC).isoformat(timespec="seconds")
    subject = f"[Fikiri Jobs] the periodic scheduler is silent: no tick for {status['silent_for']:.0f} s"
    body = "\n".join([
        f"No periodic scheduler has ticked since {last} ({status['silent_for']:.0f} s, more than "
        f"{heartbeat.MISSED_TICKS} intervals of {status['interval']:g} s): periodic jobs (Gmail sync, cleanup, "
        f"digests, these alerts' own checks) are not being enqueued.",
        f"Last scheduler: host {status['host']}, pid {status['pid']}. Check fikiri-scheduler (systemctl status).",
        f"No other alert for this until {get_settings().alert_cooldown} s after it ticks again."])
    logger.error("ALERT periodic scheduler silent for %.0f s (last tick %s); notifying operators",
                 status["silent_for"], last)
    event = {"event": "scheduler.silent", "last_tick": status["last_tick"], "interval": status["interval"],
             "silent_for": status["silent_for"], "missed_ticks": heartbeat.MISSED_TICKS,
             "host": status["host"], "pid": status["pid"]}
    return {"scheduler": status, "alert": {"incident": incident, "jobs": _notify(subject, body, incident, event)}}


def deliver_alert_webhook(event: dict[str, Any]) -> dict[str, Any]:
    """POST an alert to ``JOBS_ALERT_WEBHOOK_URL`` (retried with back-off; 4xx fails the job)."""
    url = get_settings().alert_webhook_url
    if not url:
        return {"delivered": False, "reason": "JOBS_ALERT_WEBHOOK_URL is not set"}
    response = request_with_backoff(requests.Session(), "POST", url, json=event)
    if response.status_code >= 400:
        raise UpstreamError(f"alert webhook answered {response.status_code}", response.status_code)
    return {"delivered": True, "status": response.status_code}


email_queue.register_task("check_failure_rates", check_failure_rates, max_retries=0)
email_queue.register_task("check_scheduler_liveness", check_scheduler_liveness, max_retries=0, fallback=False)
email_queue.register_task("deliver_alert_webhook", deliver_alert_webhook, max_retries=3)
