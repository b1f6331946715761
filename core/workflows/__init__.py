"""Chains of steps, and the module-level batch calls, built on the job API.
May import: core.api and everything below it."""


from core.api.batches import batch_job_ids, get_batch
from core.workflows.chains import Step, chain, enqueue_batch

__all__ = ["Step", "batch_job_ids", "chain", "enqueue_batch", "get_batch"]
