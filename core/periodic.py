"""Periodic jobs at the path DESIGN.md gives: ``from core.periodic import register_periodic``.

A façade over :mod:`core.schedule.periodic`, where they are defined; code inside ``core`` imports from there.
"""

from core.schedule.periodic import (
    ID_PREFIX,
    JsonScheduler,
    PeriodicJob,
    list_periodic,
    list_periodic_jobs,
    register_periodic,
    register_periodic_jobs,
    unregister_periodic,
)

__all__ = ["ID_PREFIX", "PeriodicJob", "JsonScheduler", "register_periodic", "unregister_periodic",
           "register_periodic_jobs", "list_periodic", "list_periodic_jobs"]
