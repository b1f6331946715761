"""Plumbing every layer stands on: Redis connections and the rule for "Redis is down", Redis key
names, the database, outbound HTTP, tracing, logs, auth, task-module checks, the rate grammar.
May import: core.config and core.errors only (and each other, without cycles)."""
