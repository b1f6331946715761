"""The durable fallback spool, used only while Redis is unreachable: the SQLite spool, its limits,
and the runner threads and hand-back to Redis.
May import: core.execution and everything below it."""
