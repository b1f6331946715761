"""Command-line entry points: the worker, and (later) the scheduler and the operator CLI."""
