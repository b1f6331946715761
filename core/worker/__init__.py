"""The worker process: its loop (claim, run, heartbeat, sweep) and its executors (prefork, fork,
simple, threaded). It hosts the webhook dispatcher and hands the fallback spool back to Redis.
May import: core.events, core.schedule, core.workflows, core.api and everything below them."""
