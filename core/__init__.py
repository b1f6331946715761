"""Fikiri Jobs: the background-job layer (queue machinery, no domain logic).

Subpackages by concern, each depending only on those below it (tests/test_architecture.py):

    core.config, core.errors, core.platform   settings, errors, connections, key names, plumbing
    core.flow                                 rate and concurrency limits, pausing a queue
    core.queue                                the lifecycle (Lua), job model, options, hooks, registry
    core.execution                            running one attempt: runner, progress, stop requests
    core.fallback                             the spool used only while Redis is unreachable
    core.api                                  RedisQueue, task objects, batches, job reads and actions
    core.workflows, core.events, core.schedule   chains, events and webhooks, periodic jobs
    core.worker                               the worker process: loop and executors
    core.ops                                  alerts, audit, dashboard queries, maintenance

``core.redis_queues``, ``core.auth`` and ``core.periodic`` are façades at the paths DESIGN.md gives.
"""
