"""Flow control: rate and concurrency limits (how they are written and resolved per job) and
pausing a queue. Enforcement runs inside the queue's Lua scripts.
May import: core.config, core.errors, core.platform."""
