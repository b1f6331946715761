"""The public job API at the path DESIGN.md and the seeds give: ``from core.redis_queues import ...``.

A façade: everything is defined in :mod:`core.api` (queues, jobs, task objects, batches). Code
inside ``core`` imports from there, never from here (tests/test_architecture.py checks it).
"""

from core.api.jobs import (
    cancel_job,
    delete_job,
    fetch_jobs,
    get_job,
    get_user_jobs,
    retry_job,
    stop_job,
    wait_for,
)
from core.api.queues import (
    RedisQueue,
    ai_queue,
    all_queues,
    crm_queue,
    email_queue,
    get_ai_queue,
    get_crm_queue,
    get_email_queue,
    get_queue,
    process_ai_request_async,
    send_email_async,
    upsert_crm_contact_async,
)
from core.api.tasks import Task
from core.queue.job_model import Job, JobStatus
from core.queue.job_options import InvalidJobIdError, validate_job_id

__all__ = [
    "RedisQueue", "Job", "JobStatus", "email_queue", "ai_queue", "crm_queue", "get_email_queue",
    "get_ai_queue", "get_crm_queue", "get_queue", "all_queues", "get_job", "get_user_jobs", "fetch_jobs",
    "cancel_job", "retry_job", "delete_job", "send_email_async", "process_ai_request_async",
    "upsert_crm_contact_async", "validate_job_id", "InvalidJobIdError", "wait_for", "stop_job", "Task",
]
