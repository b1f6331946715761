"""The same work registered as Fikiri tasks (loaded through JOBS_TASK_MODULES=bench.our_tasks)."""

from bench.raw_tasks import noop, sleep_100ms
from core.redis_queues import email_queue

email_queue.register_task("noop", noop, max_retries=0)
email_queue.register_task("sleep_100ms", sleep_100ms, max_retries=0)
