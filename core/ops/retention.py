"""Domain retention: the nightly prune of the product's own tables (issue 24, item 7).

The queue machinery knows no domain table, so each domain package registers what it keeps and
how to prune it::

    from core.ops.retention import register_pruner
    register_pruner("gmail_sync_jobs", prune_finished_syncs)   # fn(cutoff_epoch, batch_size) -> (rows, batches)

``prune_domain_data`` (the built-in periodic job ``periodic-domain-retention``, at
``JOBS_CLEANUP_CRON``) calls every registered pruner with the cutoff ``now -
FIKIRI_DOMAIN_RETENTION_DAYS`` (0: keep for ever, nothing is pruned) and ``FIKIRI_DOMAIN_RETENTION_BATCH``.
Pruners delete in batches (:func:`core.platform.db.delete_in_batches`), one short transaction
per batch, so no lock is held long on SQLite or PostgreSQL. The task returns and logs what it removed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from core.api.queues import email_queue
from core.config import get_settings

logger = logging.getLogger(__name__)

Pruner = Callable[[float, int], tuple[int, int]]
_pruners: dict[str, Pruner] = {}


def register_pruner(name: str, prune: Pruner) -> Pruner:
    """Register ``prune(cutoff, batch_size) -> (rows deleted, batches)`` under ``name`` (its table)."""
    _pruners[name] = prune
    return prune


def pruners() -> dict[str, Pruner]:
    return dict(_pruners)


def prune_domain_data(days: int | None = None) -> dict[str, Any]:
    """Prune every registered domain table of rows older than ``days`` (default
    FIKIRI_DOMAIN_RETENTION_DAYS); returns ``{"days", "cutoff", "removed": {table: rows}, "batches", "total"}``."""
    settings = get_settings()
    days = settings.domain_retention_days if days is None else days
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise ValueError(f"days must be a whole number of days, 0 or more (0: keep for ever), got {days!r}")
    report: dict[str, Any] = {"days": days, "cutoff": None, "removed": {}, "batches": {}, "total": 0}
    if days == 0:
        logger.info("domain retention: FIKIRI_DOMAIN_RETENTION_DAYS=0, nothing pruned")
        return report
    cutoff = time.time() - days * 86_400
    report["cutoff"] = cutoff
    for name, prune in sorted(_pruners.items()):
        rows, batches = prune(cutoff, settings.domain_retention_batch)
        report["removed"][name], report["batches"][name] = rows, batches
    report["total"] = sum(report["removed"].values())
    logger.info("domain retention: removed %d row(s) older than %d days (%s)", report["total"], days,
                ", ".join(f"{name}={rows}" for name, rows in report["removed"].items()) or "no pruner registered")
    return report


email_queue.register_task("prune_domain_data", prune_domain_data, max_retries=1)
