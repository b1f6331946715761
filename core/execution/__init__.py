"""Running one attempt of a task, the path every worker class and the fallback share: the runner,
progress reporting and stop requests.
May import: everything below it (core.config, core.errors, core.platform, core.flow, core.queue)."""
