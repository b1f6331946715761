"""Periodic jobs: cron and interval definitions, their spec, and the scheduler's claim.
May import: core.api and everything below it."""
