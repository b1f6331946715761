"""The job lifecycle in Redis: the Lua scripts and the one module that calls them, RQ's layout, the
job model, enqueue options, workflow hooks, the task registry, back-off and task metrics.
May import: core.config, core.errors, core.platform, core.flow."""
