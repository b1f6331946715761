"""Every setting of Fikiri Jobs, read from the environment in one place.

Modules never call ``os.environ`` themselves: they call :func:`get_settings`, so a newcomer
finds every knob (and its default) here, and tests can change the environment and call
:func:`reload_settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Default home of files we write (SQLite, spools): var/ of a checkout; installed with pip (no
# pyproject.toml beside the packages), var/ under the working directory instead of site-packages.
VAR_DIR = PROJECT_ROOT / "var" if (PROJECT_ROOT / "pyproject.toml").exists() else Path.cwd() / "var"

QUEUE_NAMES = ("email", "ai", "crm")  # short names, in the order a default worker serves them


class SettingsError(ValueError):
    """An environment variable holds a value we cannot use."""


# Values a host app set in ``app.config`` (see routes/extension.py): they win over the environment.
_overrides: dict[str, str] = {}


def _raw(name: str) -> str | None:
    return _overrides[name] if name in _overrides else os.environ.get(name)


def _env_str(name: str, default: str) -> str:
    value = _raw(name)
    return default if value is None or value == "" else value


def _env_number(name: str, default: Any, minimum: Any, kind: type, what: str) -> Any:
    raw = _raw(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = kind(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from exc
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _env_int(name: str, default: int, minimum: int | None = None) -> int:
    return _env_number(name, default, minimum, int, "a whole number")


def _env_float(name: str, default: float, minimum: float | None = None) -> float:
    return _env_number(name, default, minimum, float, "a number")


def _env_bool(name: str, default: bool) -> bool:
    raw = _raw(name)
    if raw is None or raw.strip() == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1/0, true/false, yes/no or on/off, got {raw!r}")


def _env_cluster() -> bool:
    """REDIS_CLUSTER, refused together with REDIS_SENTINELS: a cluster fails over by itself, and
    which of the two was meant cannot be guessed."""
    cluster = _env_bool("REDIS_CLUSTER", Settings.redis_cluster)
    if cluster and (_raw("REDIS_SENTINELS") or "").strip():
        raise SettingsError("REDIS_CLUSTER=1 and REDIS_SENTINELS are exclusive: a cluster fails over by "
                            "itself; set REDIS_URL to any cluster node and unset REDIS_SENTINELS")
    return cluster


def _env_choice(name: str, default: str, accepted: tuple[str, ...]) -> str:
    value = _env_str(name, default).strip().lower()
    if value not in accepted:
        raise SettingsError(f"{name} must be one of {', '.join(accepted)}, got {value!r}")
    return value


def _env_rate_limit(name: str) -> str:
    """A rate such as ``100/m``, checked now so a typo stops the process at start-up."""
    text = os.environ.get(name, "").strip()
    if text:
        from core.errors import JobsError
        from core.platform.rates import parse_rate

        try:
            parse_rate(text, name)
        except JobsError as exc:
            raise SettingsError(exc.message) from exc
    return text


def _env_rate(name: str, default: float) -> float:
    value = _env_float(name, default)
    if not 0 < value <= 1:
        raise SettingsError(f"{name} must be a share above 0 and at most 1 (0.5 is half), got {value}")
    return value


def _env_list(name: str) -> tuple[str, ...]:
    raw = _raw(name) or ""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _env_host_ports(name: str) -> tuple[tuple[str, int], ...]:
    out = []
    for part in _env_list(name):
        host, sep, port = part.rpartition(":")
        if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise SettingsError(f"{name} must be host:port pairs separated by commas, got {part!r} in it")
        out.append((host.strip("[]"), int(port)))
    return tuple(out)


def _env_prefix(name: str, default: str) -> str:
    value = _env_str(name, default).rstrip("/")
    if value and not value.startswith("/"):
        raise SettingsError(f"{name} must be a URL path starting with '/', got {value!r}")
    if not value:
        raise SettingsError(f"{name} must not be the site root; switch the part off instead")
    return value


@dataclass(frozen=True)
class Settings:
    """A snapshot of the environment. Field comments name the variable and its default."""

    # --- connections -----------------------------------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"  # REDIS_URL
    database_url: str = field(default_factory=lambda: f"sqlite:///{VAR_DIR / 'fikiri.db'}")  # DATABASE_URL
    queue_prefix: str = "fikiri"  # JOBS_QUEUE_PREFIX
    # Socket timeout of request-path Redis calls (s); a dead Redis costs at most this.
    redis_socket_timeout: float = 2.0  # JOBS_REDIS_SOCKET_TIMEOUT
    # How long the health check waits for PING (s) and how long its answer is trusted (s).
    health_check_timeout: float = 0.25  # JOBS_HEALTH_CHECK_TIMEOUT
    health_check_interval: float = 1.0  # JOBS_HEALTH_CHECK_INTERVAL
    # Redis Sentinel: when set, the master is found through these sentinels and REDIS_URL gives
    # only the database, the master's username/password and (rediss://) TLS.
    redis_sentinels: tuple[tuple[str, int], ...] = ()  # REDIS_SENTINELS: host:port,host:port
    # Redis Cluster (cluster-mode Redis or Valkey): REDIS_URL names any node; every key carries the
    # hash tag {JOBS_QUEUE_PREFIX}, so all of them live in one slot (core/platform/cluster.py).
    redis_cluster: bool = False  # REDIS_CLUSTER
    # How long a call waits out a move of our slot (a reshard: ASK, TRYAGAIN, then MOVED) before it
    # counts as a lost connection (s). Every script and transaction refuses to start while the slot
    # migrates (docs/CLUSTER.md).
    cluster_move_wait: float = 5.0  # JOBS_CLUSTER_MOVE_WAIT
    redis_sentinel_master: str = "mymaster"  # REDIS_SENTINEL_MASTER: the monitored master's name
    redis_sentinel_password: str = ""  # REDIS_SENTINEL_PASSWORD: the sentinels' own requirepass
    redis_sentinel_username: str = ""  # REDIS_SENTINEL_USERNAME
    # TLS for rediss:// URLs (files in PEM format); empty means the system's CA store / no client cert.
    redis_tls_ca_certs: str = ""  # REDIS_TLS_CA_CERTS
    redis_tls_certfile: str = ""  # REDIS_TLS_CERTFILE: client certificate (servers with tls-auth-clients)
    redis_tls_keyfile: str = ""  # REDIS_TLS_KEYFILE
    redis_tls_check_hostname: bool = True  # REDIS_TLS_CHECK_HOSTNAME

    # --- jobs --------------------------------------------------------------------------
    timeout_email: int = 300  # JOBS_TIMEOUT_EMAIL
    timeout_ai: int = 120  # JOBS_TIMEOUT_AI
    timeout_crm: int = 30  # JOBS_TIMEOUT_CRM
    default_max_retries: int = 3  # JOBS_DEFAULT_MAX_RETRIES
    retry_backoff_base: float = 2.0  # JOBS_RETRY_BACKOFF_BASE: first retry waits this long (s), then x2 ...
    retry_backoff_cap: float = 300.0  # JOBS_RETRY_BACKOFF_CAP: ... up to this (s)
    result_ttl: int = 86_400  # JOBS_RESULT_TTL: completed jobs kept (s)
    failure_ttl: int = 7 * 86_400  # JOBS_FAILURE_TTL: failed jobs kept (s), 7 days
    failure_ttl_email: int = 0  # JOBS_FAILURE_TTL_EMAIL: failed jobs of the email queue kept (s); 0: JOBS_FAILURE_TTL
    failure_ttl_ai: int = 0  # JOBS_FAILURE_TTL_AI
    failure_ttl_crm: int = 0  # JOBS_FAILURE_TTL_CRM
    # JOBS_FAILED_SCAN_MAX: failed jobs of each queue a filtered list/retry/delete looks at (newest first)
    failed_scan_max: int = 10_000
    # JOBS_FAILED_EXPORT: failed jobs about to expire (within 2 days) are exported by the nightly cleanup:
    # appended as JSON Lines to this file, or POSTed as JSON to this http(s) URL (empty: not exported)
    failed_export: str = ""
    max_payload_bytes: int = 64 * 1024  # JOBS_MAX_PAYLOAD_BYTES: JSON-encoded payload limit
    result_max_bytes: int = 1024 * 1024  # JOBS_RESULT_MAX_BYTES: a larger JSON result fails the job (not retried)
    user_index_size: int = 100  # JOBS_USER_INDEX_SIZE: newest jobs kept per user
    user_index_ttl: int = 7 * 86_400  # JOBS_USER_INDEX_TTL: a user's index expires after this idle time (s)
    task_modules: tuple[str, ...] = ()  # JOBS_TASK_MODULES: extra modules that register tasks
    # JOBS_APP_TASK_MODULES: the product's own domain task modules (comma-separated)
    app_task_modules: tuple[str, ...] = ("email_automation.tasks", "ai_assistant.tasks", "crm.tasks")
    log_format: str = "text"  # JOBS_LOG_FORMAT: text | json (one JSON object per line)

    # --- flow control (core/flow/limits.py) --------------------------------------------------------
    rate_limit_email: str = ""  # JOBS_RATE_LIMIT_EMAIL: queue-wide rate, e.g. "100/m" (empty: none)
    rate_limit_ai: str = ""  # JOBS_RATE_LIMIT_AI
    rate_limit_crm: str = ""  # JOBS_RATE_LIMIT_CRM
    max_deferrals: int = 20  # JOBS_MAX_DEFERRALS: RetryAfter deferrals of one job before it fails
    max_retry_after: float = 3600.0  # JOBS_MAX_RETRY_AFTER (s): a longer Retry-After is cut to this
    stop_grace: float = 5.0  # JOBS_STOP_GRACE (s): a stopped job may end by itself this long before it is ended
    events_maxlen: int = 50_000  # JOBS_EVENTS_MAXLEN: lifecycle events kept in the stream (about; 0: none written)

    # --- fallback (Redis unreachable) ------------------------------------------------------
    fallback_enabled: bool = True  # JOBS_FALLBACK_ENABLED
    fallback_workers: int = 4  # JOBS_FALLBACK_WORKERS: runner threads per process, whatever the backlog
    fallback_max_pending: int = 10_000  # JOBS_FALLBACK_MAX_PENDING: unfinished spooled jobs before enqueue refuses (503)
    fallback_keep: int = 10_000  # JOBS_FALLBACK_KEEP: finished spooled jobs kept for status reads ...
    fallback_keep_bytes: int = 50 * 1024 * 1024  # JOBS_FALLBACK_KEEP_BYTES: ... and at most this many bytes of results/errors
    # JOBS_FALLBACK_SPOOL: the spool file, shared by every process on the host
    fallback_spool: str = field(default_factory=lambda: str(VAR_DIR / "fallback-spool.db"))
    fallback_sync: str = "normal"  # JOBS_FALLBACK_SYNC: normal (survives a process crash) | full (fsync each job)
    fallback_lease: float = 30.0  # JOBS_FALLBACK_LEASE (s): a dead process's spooled jobs are taken over after this
    # JOBS_FALLBACK_ENQUEUE_WAIT (s): the longest an enqueue waits for the spool's write lock (other
    # writers); past it the enqueue raises QueueUnavailableError (503) saying so. p99 of an enqueue
    # during a 10,000-job burst is well under this (docs/BENCHMARKS.md "The spool under load")
    fallback_enqueue_wait: float = 2.0

    # --- worker --------------------------------------------------------------------------
    # Lease arithmetic (issue 21 item 4). A claimed job's lease is heartbeat interval + grace
    # (1 + 6 = 7 s), extended every heartbeat; the sweep runs every maintenance interval (2 s).
    # * Recovery: a dead worker's last heartbeat renewed its leases at most 7 s before they expire,
    #   and the next sweep comes within 2 s of that, so its jobs are back in their queue at most
    #   lease + sweep = 9 s after it died (bench/recovery.py: p99 under 10 s).
    # * No false recovery: a live worker renews every 1 s, so a pause (SIGSTOP, GC, CPU starvation)
    #   of up to grace = 6 s never loses a lease: 7 s lease - 1 s since the last renewal >= 6 s. A
    #   longer pause loses it; the late attempt is then fenced by its claim (finish, progress and
    #   heartbeat refused: finish.lua, progress.lua, lease.lua) and the worker stops that run.
    # Costs: one heartbeat pipeline per worker per second, one sweep (SET NX + one script) per
    # queue per 2 s across all workers.
    worker_ttl: int = 60  # JOBS_WORKER_TTL: a worker's registration outlives its last heartbeat by this (s)
    worker_maintenance_interval: int = 2  # JOBS_WORKER_MAINTENANCE_INTERVAL (s): the sweep for abandoned jobs
    worker_heartbeat_interval: int = 1  # JOBS_WORKER_HEARTBEAT_INTERVAL (s): leases extended, metrics flushed
    worker_heartbeat_grace: int = 6  # JOBS_WORKER_HEARTBEAT_GRACE (s) past a missed heartbeat: the longest safe pause
    # JOBS_WORKER_SHUTDOWN_TIMEOUT (s): after SIGTERM, jobs in hand get this long to finish; then the
    # interruptible ones are interrupted and requeued (no retry, no stall) and the worker exits 0.
    # 25 s + the 2 s interrupt grace stays under Kubernetes' 30 s terminationGracePeriodSeconds.
    worker_shutdown_timeout: float = 25.0
    # JOBS_ENQUEUE_DURABILITY: "none" (default) or "replica": enqueue returns only after WAIT 1
    # confirms a replica has the write, so an acknowledged job survives a failover to that replica.
    # (WAITAOF, Redis >= 7.2, would also wait for the replica's AOF fsync; not offered yet: the
    # servers we test on are 7.0, and it never confirms when the replica runs without AOF.)
    enqueue_durability: str = "none"
    enqueue_durability_timeout: float = 1.0  # JOBS_ENQUEUE_DURABILITY_TIMEOUT (s): the WAIT's bound
    worker_promote_interval: float = 0.5  # JOBS_WORKER_PROMOTE_INTERVAL (s): delayed jobs and retries run this late at most
    worker_idle_wait: float = 1.0  # JOBS_WORKER_IDLE_WAIT (s): longest block on the wake-up tokens
    worker_class: str = "prefork"  # JOBS_WORKER_CLASS: prefork | fork | simple | threaded | async
    worker_concurrency: int = 8  # JOBS_WORKER_CONCURRENCY: jobs at once in the threaded worker
    # JOBS_WORKER_ASYNC_CONCURRENCY: async jobs at once on the async worker's event loop (its sync
    # jobs run in JOBS_WORKER_CONCURRENCY threads beside it); 100 jobs of 100 ms give 1,000 jobs/s
    worker_async_concurrency: int = 100
    # JOBS_WORKER_PREFORK_CLAIMS: child (each prefork child claims and records its own jobs, issue 22)
    # | parent (the worker process claims for its children and records their ends)
    worker_prefork_claims: str = "child"
    worker_pool_size: int = 0  # JOBS_WORKER_POOL_SIZE: prefork children (0: one per CPU)
    worker_max_jobs_per_child: int = 1000  # JOBS_WORKER_MAX_JOBS_PER_CHILD: a prefork child is replaced after this
    worker_max_child_memory_mb: int = 512  # JOBS_WORKER_MAX_CHILD_MEMORY_MB: ... or above this RSS (0: no limit)
    # JOBS_WORKER_PREFETCH: the most jobs a prefork or simple worker claims ahead of its free slots
    # (adaptive, core/worker/prefetch.py: only while claims come back full, and at most 5 ms of work
    # at the jobs' mean duration); 0: one job per free slot
    worker_prefetch: int = 16
    # JOBS_WORKER_PREFETCH_BUDGET_MS: the work (at the jobs' mean duration) a worker holds claimed
    # ahead at most, so a job claimed ahead waits about this long at most
    worker_prefetch_budget_ms: float = 5.0
    # JOBS_WORKER_BURST_REDIS_TIMEOUT (s): a --burst worker that cannot reach Redis this long exits 1
    # (a long-running worker keeps retrying, as systemd expects, and says so once a minute).
    worker_burst_redis_timeout: float = 30.0

    @property
    def worker_lease(self) -> float:
        """Seconds an in-flight job's lease lasts without a heartbeat."""
        return float(self.worker_heartbeat_interval + self.worker_heartbeat_grace)

    # --- periodic jobs (scheduler) -----------------------------------------------------------
    email_sync_interval_minutes: float = 5.0  # EMAIL_SYNC_INTERVAL_MINUTES
    ai_processing_interval_minutes: float = 10.0  # AI_PROCESSING_INTERVAL_MINUTES
    ai_processing_batch_size: int = 50  # AI_PROCESSING_BATCH_SIZE
    cleanup_cron: str = "0 2 * * *"  # JOBS_CLEANUP_CRON (UTC)
    digest_cron: str = "0 8 * * *"  # JOBS_DIGEST_CRON (UTC)
    digest_to: str = "ops@localhost"  # JOBS_DIGEST_TO: who gets the daily digest
    scheduler_interval: float = 5.0  # JOBS_SCHEDULER_INTERVAL: seconds between scheduler polls
    # A run found more than this late (the scheduler was down) is "missed": a schedule with
    # missed="skip" drops it. Never less than two scheduler intervals, so a normal pass is not late.
    scheduler_missed_grace: float = 60.0  # JOBS_SCHEDULER_MISSED_GRACE (s)

    # --- domain: Gmail, SMTP, AI, CRM ----------------------------------------------------------
    gmail_api_base_url: str = "https://gmail.googleapis.com"  # GMAIL_API_BASE_URL
    gmail_token_url: str = "https://oauth2.googleapis.com/token"  # GMAIL_TOKEN_URL
    gmail_client_id: str = ""  # GMAIL_CLIENT_ID
    gmail_client_secret: str = ""  # GMAIL_CLIENT_SECRET
    gmail_lookback_days: int = 30  # GMAIL_LOOKBACK_DAYS: older name, read only as the default of email_sync_lookback_days
    gmail_page_size: int = 100  # GMAIL_PAGE_SIZE
    http_timeout: float = 15.0  # JOBS_HTTP_TIMEOUT: every outbound HTTP call (s)
    http_max_attempts: int = 4  # JOBS_HTTP_MAX_ATTEMPTS: tries on 429/5xx before giving up
    http_backoff_cap: float = 30.0  # JOBS_HTTP_BACKOFF_CAP: longest wait between tries (s)
    smtp_host: str = ""  # SMTP_HOST: empty -> messages go to the outbox table
    smtp_port: int = 587  # SMTP_PORT
    smtp_user: str = ""  # SMTP_USER
    smtp_password: str = ""  # SMTP_PASSWORD
    smtp_starttls: bool = True  # SMTP_STARTTLS
    smtp_from: str = "jobs@fikiri.local"  # SMTP_FROM
    ai_base_url: str = ""  # AI_BASE_URL: an OpenAI-compatible API; empty -> the local engine
    ai_api_key: str = ""  # AI_API_KEY
    ai_model: str = "gpt-4o-mini"  # AI_MODEL
    crm_webhook_url: str = ""  # CRM_WEBHOOK_URL: POSTed on every contact/lead change when set
    # FIKIRI_DOMAIN_RETENTION_DAYS: finished sync rows, sent mail and processed AI rows older than
    # this are pruned nightly (0: kept for ever); FIKIRI_DOMAIN_RETENTION_BATCH rows per DELETE
    domain_retention_days: int = 90
    domain_retention_batch: int = 500

    # --- Flask extension (routes/extension.py): where each part is mounted, and whether --------
    api_prefix: str = "/api/jobs"  # JOBS_API_PREFIX
    ops_prefix: str = "/api/jobs"  # JOBS_OPS_PREFIX: scheduler and monitor routes (default: JOBS_API_PREFIX)
    metrics_path: str = "/metrics"  # JOBS_METRICS_PATH
    dashboard_prefix: str = "/dashboard"  # JOBS_DASHBOARD_PREFIX
    mount_api: bool = True  # JOBS_MOUNT_API
    mount_ops: bool = True  # JOBS_MOUNT_OPS
    mount_metrics: bool = True  # JOBS_MOUNT_METRICS
    mount_dashboard: bool = True  # JOBS_MOUNT_DASHBOARD
    max_body_bytes: int = 256 * 1024  # JOBS_MAX_BODY_BYTES: request bodies under our prefixes (413 above)

    # --- tracing and error reporting (core/platform/tracing.py; extras [otel], [sentry]) ------------------
    otel_enabled: bool = True  # JOBS_OTEL_ENABLED: spans when opentelemetry is installed
    sentry_dsn: str = ""  # SENTRY_DSN: the worker initialises Sentry with it

    # --- auth (HTTP API) -------------------------------------------------------------------
    admin_token: str = ""  # JOBS_ADMIN_TOKEN
    secret_key: str = ""  # SECRET_KEY
    insecure_dev: bool = False  # JOBS_INSECURE_DEV
    user_token_max_age: int = 7 * 86_400  # JOBS_USER_TOKEN_MAX_AGE (s)

    # --- hardening (issue 15): dashboard sessions, audit log, Gmail sync ---------------------
    # The dashboard session cookie carries the Secure flag unless this is off (default: on,
    # off only under JOBS_INSECURE_DEV=1).
    session_cookie_secure: bool = True  # JOBS_SESSION_COOKIE_SECURE
    session_idle_timeout: int = 30 * 60  # JOBS_SESSION_IDLE_TIMEOUT: idle dashboard session ends (s)
    session_max_age: int = 12 * 3600  # JOBS_SESSION_MAX_AGE: absolute dashboard session lifetime (s)
    audit_max_entries: int = 10_000  # JOBS_AUDIT_MAX_ENTRIES: operator actions kept (approximate trim)
    # Full-sync window when a call names none (EMAIL_SYNC_LOOKBACK_DAYS; GMAIL_LOOKBACK_DAYS, the
    # older name, is read when the new one is unset).
    email_sync_lookback_days: int = 90  # EMAIL_SYNC_LOOKBACK_DAYS
    # A sync row still 'pending' with no queue job after this long is stale and may be replaced.
    gmail_sync_stale_after: int = 300  # GMAIL_SYNC_STALE_AFTER (s)

    # --- AI thread jobs, per-user digests, failure-rate alerts (issue 15, item 6) -------------
    user_digest_cron: str = "0 8 * * *"  # JOBS_USER_DIGEST_CRON (UTC): each user's daily digest
    alert_check_interval: int = 300  # JOBS_ALERT_CHECK_INTERVAL (s): how often failure rates are checked
    alert_window: int = 900  # JOBS_ALERT_WINDOW (s): attempts that ended this recently count
    alert_failure_rate: float = 0.5  # JOBS_ALERT_FAILURE_RATE: alert at or above this share (0-1]
    alert_min_attempts: int = 5  # JOBS_ALERT_MIN_ATTEMPTS: fewer attempts in the window never alert
    alert_cooldown: int = 3600  # JOBS_ALERT_COOLDOWN (s): one alert per task per incident + this quiet time
    alert_to: tuple[str, ...] = ()  # JOBS_ALERT_TO: operators' addresses (empty: JOBS_DIGEST_TO)
    alert_webhook_url: str = ""  # JOBS_ALERT_WEBHOOK_URL: also POSTed every alert when set

    # --- live events (core/events/stream.py, routes/events.py) and webhooks (core/events/webhooks.py) ------------
    # An SSE connection holds one gunicorn thread and one Redis connection for its whole life, so
    # both are bounded: a lifetime (the client reconnects with Last-Event-ID) and a cap per process.
    events_stream_max_seconds: float = 300.0  # JOBS_EVENTS_STREAM_MAX_SECONDS: one SSE connection's lifetime (s)
    events_heartbeat: float = 15.0  # JOBS_EVENTS_HEARTBEAT (s): a comment line this often keeps proxies from closing
    events_retry_ms: int = 3000  # JOBS_EVENTS_RETRY_MS: the SSE "retry:" hint, the client's reconnection delay
    events_max_streams: int = 2  # JOBS_EVENTS_MAX_STREAMS: live SSE connections per web process (keep < --threads)
    webhook_queue: str = "crm"  # JOBS_WEBHOOK_QUEUE: the queue delivery jobs run on
    webhook_timeout: float = 10.0  # JOBS_WEBHOOK_TIMEOUT (s): one delivery attempt (connect + answer)
    webhook_max_retries: int = 5  # JOBS_WEBHOOK_MAX_RETRIES: retries of a delivery after a 5xx/429/timeout
    webhook_attempts_kept: int = 50  # JOBS_WEBHOOK_ATTEMPTS_KEPT: attempts recorded per webhook (newest)
    webhook_max: int = 100  # JOBS_WEBHOOK_MAX: registered webhooks at most
    webhook_claim_idle: float = 60.0  # JOBS_WEBHOOK_CLAIM_IDLE (s): a dead dispatcher's events are taken over after this

    def timeout_for(self, queue_short_name: str) -> int:
        return {"email": self.timeout_email, "ai": self.timeout_ai, "crm": self.timeout_crm}.get(
            queue_short_name, self.timeout_email
        )

    def failure_ttl_for(self, queue_short_name: str) -> int:
        """Seconds a failed job of the queue is kept: JOBS_FAILURE_TTL_<QUEUE>, else JOBS_FAILURE_TTL."""
        per_queue = {"email": self.failure_ttl_email, "ai": self.failure_ttl_ai, "crm": self.failure_ttl_crm}
        return per_queue.get(queue_short_name) or self.failure_ttl

    def queue_rate_limit(self, queue_short_name: str) -> Any:
        """The queue-wide rate limit (:class:`core.platform.rates.Rate`) or None."""
        text = {"email": self.rate_limit_email, "ai": self.rate_limit_ai, "crm": self.rate_limit_crm}.get(
            queue_short_name, "")
        if not text:
            return None
        from core.platform.rates import parse_rate

        return parse_rate(text, f"JOBS_RATE_LIMIT_{queue_short_name.upper()}")

    @property
    def missed_grace(self) -> float:
        """Seconds a periodic run may be late before it counts as missed (see scheduler_missed_grace)."""
        return max(self.scheduler_missed_grace, 2 * self.scheduler_interval)

    def full_queue_name(self, short_name: str) -> str:
        """``email`` -> ``fikiri:email`` (the one place a queue's full name is made)."""
        return f"{self.queue_prefix}:{short_name}"

    def short_queue_name(self, name: str) -> str:
        """``fikiri:email`` -> ``email``; a short name stays as it is (the one place it is undone)."""
        return name.removeprefix(f"{self.queue_prefix}:")


def load_settings() -> Settings:
    """Read the environment now: one line per setting, the same shape on purpose (its variable,
    its default from :class:`Settings`, its bound), so each setting is read in exactly one place."""
    return Settings(
        redis_url=_env_str("REDIS_URL", Settings.redis_url),
        database_url=_env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'fikiri.db'}"),
        queue_prefix=_env_str("JOBS_QUEUE_PREFIX", Settings.queue_prefix),
        redis_socket_timeout=_env_float("JOBS_REDIS_SOCKET_TIMEOUT", Settings.redis_socket_timeout, 0.01),
        health_check_timeout=_env_float("JOBS_HEALTH_CHECK_TIMEOUT", Settings.health_check_timeout, 0.01),
        health_check_interval=_env_float("JOBS_HEALTH_CHECK_INTERVAL", Settings.health_check_interval, 0.0),
        redis_sentinels=_env_host_ports("REDIS_SENTINELS"),
        redis_cluster=_env_cluster(),
        cluster_move_wait=_env_float("JOBS_CLUSTER_MOVE_WAIT", Settings.cluster_move_wait, 0.0),
        redis_sentinel_master=_env_str("REDIS_SENTINEL_MASTER", Settings.redis_sentinel_master),
        redis_sentinel_password=_env_str("REDIS_SENTINEL_PASSWORD", ""),
        redis_sentinel_username=_env_str("REDIS_SENTINEL_USERNAME", ""),
        redis_tls_ca_certs=_env_str("REDIS_TLS_CA_CERTS", ""),
        redis_tls_certfile=_env_str("REDIS_TLS_CERTFILE", ""),
        redis_tls_keyfile=_env_str("REDIS_TLS_KEYFILE", ""),
        redis_tls_check_hostname=_env_bool("REDIS_TLS_CHECK_HOSTNAME", Settings.redis_tls_check_hostname),
        timeout_email=_env_int("JOBS_TIMEOUT_EMAIL", Settings.timeout_email, 1),
        timeout_ai=_env_int("JOBS_TIMEOUT_AI", Settings.timeout_ai, 1),
        timeout_crm=_env_int("JOBS_TIMEOUT_CRM", Settings.timeout_crm, 1),
        default_max_retries=_env_int("JOBS_DEFAULT_MAX_RETRIES", Settings.default_max_retries, 0),
        retry_backoff_base=_env_float("JOBS_RETRY_BACKOFF_BASE", Settings.retry_backoff_base, 0.0),
        retry_backoff_cap=_env_float("JOBS_RETRY_BACKOFF_CAP", Settings.retry_backoff_cap, 0.0),
        result_ttl=_env_int("JOBS_RESULT_TTL", Settings.result_ttl, 1),
        failure_ttl=_env_int("JOBS_FAILURE_TTL", Settings.failure_ttl, 1),
        failure_ttl_email=_env_int("JOBS_FAILURE_TTL_EMAIL", Settings.failure_ttl_email, 0),
        failure_ttl_ai=_env_int("JOBS_FAILURE_TTL_AI", Settings.failure_ttl_ai, 0),
        failure_ttl_crm=_env_int("JOBS_FAILURE_TTL_CRM", Settings.failure_ttl_crm, 0),
        failed_scan_max=_env_int("JOBS_FAILED_SCAN_MAX", Settings.failed_scan_max, 1),
        failed_export=_env_str("JOBS_FAILED_EXPORT", ""),
        max_payload_bytes=_env_int("JOBS_MAX_PAYLOAD_BYTES", Settings.max_payload_bytes, 2),
        result_max_bytes=_env_int("JOBS_RESULT_MAX_BYTES", Settings.result_max_bytes, 16),
        user_index_size=_env_int("JOBS_USER_INDEX_SIZE", Settings.user_index_size, 1),
        user_index_ttl=_env_int("JOBS_USER_INDEX_TTL", Settings.user_index_ttl, 1),
        task_modules=_env_list("JOBS_TASK_MODULES"),
        app_task_modules=_env_list("JOBS_APP_TASK_MODULES") or Settings.app_task_modules,
        log_format=_env_choice("JOBS_LOG_FORMAT", Settings.log_format, ("text", "json")),
        rate_limit_email=_env_rate_limit("JOBS_RATE_LIMIT_EMAIL"),
        rate_limit_ai=_env_rate_limit("JOBS_RATE_LIMIT_AI"),
        rate_limit_crm=_env_rate_limit("JOBS_RATE_LIMIT_CRM"),
        max_deferrals=_env_int("JOBS_MAX_DEFERRALS", Settings.max_deferrals, 0),
        max_retry_after=_env_float("JOBS_MAX_RETRY_AFTER", Settings.max_retry_after, 0.0),
        stop_grace=_env_float("JOBS_STOP_GRACE", Settings.stop_grace, 0.0),
        events_maxlen=_env_int("JOBS_EVENTS_MAXLEN", Settings.events_maxlen, 0),
        fallback_enabled=_env_bool("JOBS_FALLBACK_ENABLED", Settings.fallback_enabled),
        fallback_workers=_env_int("JOBS_FALLBACK_WORKERS", Settings.fallback_workers, 1),
        fallback_max_pending=_env_int("JOBS_FALLBACK_MAX_PENDING", Settings.fallback_max_pending, 1),
        fallback_keep=_env_int("JOBS_FALLBACK_KEEP", Settings.fallback_keep, 1),
        fallback_keep_bytes=_env_int("JOBS_FALLBACK_KEEP_BYTES", Settings.fallback_keep_bytes, 1024),
        fallback_spool=_env_str("JOBS_FALLBACK_SPOOL", str(VAR_DIR / "fallback-spool.db")),
        fallback_sync=_env_choice("JOBS_FALLBACK_SYNC", Settings.fallback_sync, ("normal", "full")),
        fallback_lease=_env_float("JOBS_FALLBACK_LEASE", Settings.fallback_lease, 1.0),
        fallback_enqueue_wait=_env_float("JOBS_FALLBACK_ENQUEUE_WAIT", Settings.fallback_enqueue_wait, 0.01),
        worker_ttl=_env_int("JOBS_WORKER_TTL", Settings.worker_ttl, 2),
        worker_maintenance_interval=_env_int(
            "JOBS_WORKER_MAINTENANCE_INTERVAL", Settings.worker_maintenance_interval, 1
        ),
        worker_heartbeat_interval=_env_int("JOBS_WORKER_HEARTBEAT_INTERVAL", Settings.worker_heartbeat_interval, 1),
        worker_heartbeat_grace=_env_int("JOBS_WORKER_HEARTBEAT_GRACE", Settings.worker_heartbeat_grace, 1),
        enqueue_durability=_env_choice("JOBS_ENQUEUE_DURABILITY", Settings.enqueue_durability,
                                       ("none", "replica")),
        enqueue_durability_timeout=_env_float("JOBS_ENQUEUE_DURABILITY_TIMEOUT", Settings.enqueue_durability_timeout,
                                              0.001),
        worker_shutdown_timeout=_env_float("JOBS_WORKER_SHUTDOWN_TIMEOUT", Settings.worker_shutdown_timeout, 0.0),
        worker_promote_interval=_env_float("JOBS_WORKER_PROMOTE_INTERVAL", Settings.worker_promote_interval, 0.01),
        worker_idle_wait=_env_float("JOBS_WORKER_IDLE_WAIT", Settings.worker_idle_wait, 0.01),
        worker_class=_env_str("JOBS_WORKER_CLASS", Settings.worker_class),
        worker_concurrency=_env_int("JOBS_WORKER_CONCURRENCY", Settings.worker_concurrency, 1),
        worker_async_concurrency=_env_int("JOBS_WORKER_ASYNC_CONCURRENCY", Settings.worker_async_concurrency, 1),
        worker_prefork_claims=_env_str("JOBS_WORKER_PREFORK_CLAIMS", Settings.worker_prefork_claims),
        worker_pool_size=_env_int("JOBS_WORKER_POOL_SIZE", Settings.worker_pool_size, 0),
        worker_max_jobs_per_child=_env_int("JOBS_WORKER_MAX_JOBS_PER_CHILD", Settings.worker_max_jobs_per_child, 1),
        worker_max_child_memory_mb=_env_int("JOBS_WORKER_MAX_CHILD_MEMORY_MB", Settings.worker_max_child_memory_mb, 0),
        worker_prefetch=_env_int("JOBS_WORKER_PREFETCH", Settings.worker_prefetch, 0),
        worker_prefetch_budget_ms=_env_float("JOBS_WORKER_PREFETCH_BUDGET_MS", Settings.worker_prefetch_budget_ms, 0.0),
        worker_burst_redis_timeout=_env_float("JOBS_WORKER_BURST_REDIS_TIMEOUT", Settings.worker_burst_redis_timeout,
                                              0.1),
        email_sync_interval_minutes=_env_float("EMAIL_SYNC_INTERVAL_MINUTES", Settings.email_sync_interval_minutes, 0.01),
        ai_processing_interval_minutes=_env_float(
            "AI_PROCESSING_INTERVAL_MINUTES", Settings.ai_processing_interval_minutes, 0.01
        ),
        ai_processing_batch_size=_env_int("AI_PROCESSING_BATCH_SIZE", Settings.ai_processing_batch_size, 1),
        cleanup_cron=_env_str("JOBS_CLEANUP_CRON", Settings.cleanup_cron),
        digest_cron=_env_str("JOBS_DIGEST_CRON", Settings.digest_cron),
        digest_to=_env_str("JOBS_DIGEST_TO", Settings.digest_to),
        scheduler_interval=_env_float("JOBS_SCHEDULER_INTERVAL", Settings.scheduler_interval, 0.1),
        scheduler_missed_grace=_env_float("JOBS_SCHEDULER_MISSED_GRACE", Settings.scheduler_missed_grace, 0.0),
        gmail_api_base_url=_env_str("GMAIL_API_BASE_URL", Settings.gmail_api_base_url),
        gmail_token_url=_env_str("GMAIL_TOKEN_URL", Settings.gmail_token_url),
        gmail_client_id=_env_str("GMAIL_CLIENT_ID", ""),
        gmail_client_secret=_env_str("GMAIL_CLIENT_SECRET", ""),
        gmail_lookback_days=_env_int("GMAIL_LOOKBACK_DAYS", Settings.gmail_lookback_days, 1),
        gmail_page_size=_env_int("GMAIL_PAGE_SIZE", Settings.gmail_page_size, 1),
        http_timeout=_env_float("JOBS_HTTP_TIMEOUT", Settings.http_timeout, 0.1),
        http_max_attempts=_env_int("JOBS_HTTP_MAX_ATTEMPTS", Settings.http_max_attempts, 1),
        http_backoff_cap=_env_float("JOBS_HTTP_BACKOFF_CAP", Settings.http_backoff_cap, 0.0),
        smtp_host=_env_str("SMTP_HOST", ""),
        smtp_port=_env_int("SMTP_PORT", Settings.smtp_port, 1),
        smtp_user=_env_str("SMTP_USER", ""),
        smtp_password=_env_str("SMTP_PASSWORD", ""),
        smtp_starttls=_env_bool("SMTP_STARTTLS", Settings.smtp_starttls),
        smtp_from=_env_str("SMTP_FROM", Settings.smtp_from),
        ai_base_url=_env_str("AI_BASE_URL", ""),
        ai_api_key=_env_str("AI_API_KEY", ""),
        ai_model=_env_str("AI_MODEL", Settings.ai_model),
        crm_webhook_url=_env_str("CRM_WEBHOOK_URL", ""),
        domain_retention_days=_env_int("FIKIRI_DOMAIN_RETENTION_DAYS", Settings.domain_retention_days, 0),
        domain_retention_batch=_env_int("FIKIRI_DOMAIN_RETENTION_BATCH", Settings.domain_retention_batch, 1),
        api_prefix=_env_prefix("JOBS_API_PREFIX", Settings.api_prefix),
        ops_prefix=_env_prefix("JOBS_OPS_PREFIX", _env_prefix("JOBS_API_PREFIX", Settings.api_prefix)),
        metrics_path=_env_prefix("JOBS_METRICS_PATH", Settings.metrics_path),
        dashboard_prefix=_env_prefix("JOBS_DASHBOARD_PREFIX", Settings.dashboard_prefix),
        mount_api=_env_bool("JOBS_MOUNT_API", True),
        mount_ops=_env_bool("JOBS_MOUNT_OPS", True),
        mount_metrics=_env_bool("JOBS_MOUNT_METRICS", True),
        mount_dashboard=_env_bool("JOBS_MOUNT_DASHBOARD", True),
        max_body_bytes=_env_int("JOBS_MAX_BODY_BYTES", Settings.max_body_bytes, 1),
        otel_enabled=_env_bool("JOBS_OTEL_ENABLED", Settings.otel_enabled),
        sentry_dsn=_env_str("SENTRY_DSN", ""),
        admin_token=_env_str("JOBS_ADMIN_TOKEN", ""),
        secret_key=_env_str("SECRET_KEY", ""),
        insecure_dev=_env_bool("JOBS_INSECURE_DEV", False),
        user_token_max_age=_env_int("JOBS_USER_TOKEN_MAX_AGE", Settings.user_token_max_age, 1),
        session_cookie_secure=_env_bool("JOBS_SESSION_COOKIE_SECURE", not _env_bool("JOBS_INSECURE_DEV", False)),
        session_idle_timeout=_env_int("JOBS_SESSION_IDLE_TIMEOUT", Settings.session_idle_timeout, 1),
        session_max_age=_env_int("JOBS_SESSION_MAX_AGE", Settings.session_max_age, 1),
        audit_max_entries=_env_int("JOBS_AUDIT_MAX_ENTRIES", Settings.audit_max_entries, 1),
        email_sync_lookback_days=_env_int(
            "EMAIL_SYNC_LOOKBACK_DAYS", _env_int("GMAIL_LOOKBACK_DAYS", Settings.email_sync_lookback_days, 1), 1
        ),
        gmail_sync_stale_after=_env_int("GMAIL_SYNC_STALE_AFTER", Settings.gmail_sync_stale_after, 1),
        user_digest_cron=_env_str("JOBS_USER_DIGEST_CRON", Settings.user_digest_cron),
        alert_check_interval=_env_int("JOBS_ALERT_CHECK_INTERVAL", Settings.alert_check_interval, 1),
        alert_window=_env_int("JOBS_ALERT_WINDOW", Settings.alert_window, 1),
        alert_failure_rate=_env_rate("JOBS_ALERT_FAILURE_RATE", Settings.alert_failure_rate),
        alert_min_attempts=_env_int("JOBS_ALERT_MIN_ATTEMPTS", Settings.alert_min_attempts, 1),
        alert_cooldown=_env_int("JOBS_ALERT_COOLDOWN", Settings.alert_cooldown, 1),
        alert_to=_env_list("JOBS_ALERT_TO"),
        alert_webhook_url=_env_str("JOBS_ALERT_WEBHOOK_URL", ""),
        events_stream_max_seconds=_env_float("JOBS_EVENTS_STREAM_MAX_SECONDS", Settings.events_stream_max_seconds, 0.1),
        events_heartbeat=_env_float("JOBS_EVENTS_HEARTBEAT", Settings.events_heartbeat, 0.1),
        events_retry_ms=_env_int("JOBS_EVENTS_RETRY_MS", Settings.events_retry_ms, 0),
        events_max_streams=_env_int("JOBS_EVENTS_MAX_STREAMS", Settings.events_max_streams, 0),
        webhook_queue=_env_choice("JOBS_WEBHOOK_QUEUE", Settings.webhook_queue, QUEUE_NAMES),
        webhook_timeout=_env_float("JOBS_WEBHOOK_TIMEOUT", Settings.webhook_timeout, 0.1),
        webhook_max_retries=_env_int("JOBS_WEBHOOK_MAX_RETRIES", Settings.webhook_max_retries, 0),
        webhook_attempts_kept=_env_int("JOBS_WEBHOOK_ATTEMPTS_KEPT", Settings.webhook_attempts_kept, 1),
        webhook_max=_env_int("JOBS_WEBHOOK_MAX", Settings.webhook_max, 1),
        webhook_claim_idle=_env_float("JOBS_WEBHOOK_CLAIM_IDLE", Settings.webhook_claim_idle, 0.1),
    )


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read once."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def set_overrides(values: Mapping[str, object]) -> Settings:
    """Let ``values`` (a host app's ``app.config``) win over the environment, then re-read.

    Only names that are settings here are used; ``None`` means "not set". Booleans become
    ``1``/``0`` and lists or tuples become comma-separated strings, as in the environment.
    """
    global _settings
    _overrides.clear()
    for name, value in values.items():
        if value is None or not isinstance(name, str):
            continue
        if isinstance(value, bool):
            value = "1" if value else "0"
        elif isinstance(value, list | tuple | set | frozenset):
            value = ",".join(str(v) for v in value)
        _overrides[name] = str(value)
    _settings = load_settings()
    return _settings


def reload_settings() -> Settings:
    """Re-read the environment (tests, and processes that change it before first use)."""
    global _settings
    _settings = load_settings()
    return _settings
