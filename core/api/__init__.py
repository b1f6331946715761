"""The public job API: RedisQueue and its queues, task objects, batches, and reads and operator
actions across Redis and the fallback (core.redis_queues is its public façade).
May import: core.fallback and everything below it."""
