"""The operator CLI: ``python -m scripts.jobs [--json] COMMAND ...``.

Tables for people, ``--json`` for scripts. Exit codes: 0 done, 1 the job or periodic job does
not exist or cannot change state, 2 bad input, 3 Redis unreachable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.api.jobs import cancel_job, get_job, get_user_jobs, retry_job, stop_job  # noqa: E402
from core.api.queues import all_queues, get_queue  # noqa: E402
from core.errors import InvalidJobStateError, JobNotFoundError, JobsError  # noqa: E402
from core.ops import audit  # noqa: E402
from core.platform.connection import get_redis, redis_available  # noqa: E402
from core.platform.keys import PRIORITIES  # noqa: E402
from core.queue import task_metrics  # noqa: E402
from core.schedule import periodic  # noqa: E402
from core.schedule.spec import schedule_id  # noqa: E402

EXIT_NOT_FOUND, EXIT_BAD_INPUT, EXIT_REDIS_DOWN = 1, 2, 3


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[str(row.get(c, "")) if row.get(c) is not None else "-" for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))
    return "\n".join([line, *("  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells)])


class Output:
    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, data: Any, table: Callable[[], str]) -> None:
        click.echo(json.dumps(data, indent=2, default=str) if self.as_json else table())


def _jobs_table(jobs: Iterable[dict[str, Any]]) -> str:
    rows = [{**j, "created": _when(j.get("created_at")), "error": (j.get("error") or "").strip().splitlines()[-1:]}
            for j in jobs]
    for row in rows:
        row["error"] = row["error"][0][:60] if row["error"] else ""
    return _table(rows, ["job_id", "queue", "task_name", "status", "retry_count", "created", "error"])


def run(command: Callable[[], None]) -> None:
    """Map our errors onto exit codes with one clear line on stderr."""
    try:
        command()
    except JobNotFoundError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(EXIT_NOT_FOUND)
    except InvalidJobStateError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(EXIT_NOT_FOUND)
    except JobsError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(EXIT_BAD_INPUT)


@click.group()
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def cli(ctx: click.Context, as_json: bool) -> None:
    """Inspect and act on Fikiri Jobs queues."""
    ctx.obj = Output(as_json)
    if not redis_available():
        from core.platform.connection import redis_description

        click.echo(f"error: Redis at {redis_description()} is unreachable", err=True)  # never its password
        sys.exit(EXIT_REDIS_DOWN)


@cli.command()
@click.argument("queue")
@click.argument("task")
@click.option("--payload", default="{}", help="JSON object of keyword arguments")
@click.option("--delay", type=float, default=None, help="seconds to wait before running")
@click.option("--priority", type=click.Choice(list(PRIORITIES)), default="normal")
@click.option("--user", "user_id", default=None)
@click.option("--max-retries", type=int, default=None)
@click.option("--expires", type=float, default=None, help="seconds: not started by then, it ends expired, never runs")
@click.pass_obj
def enqueue(out: Output, queue: str, task: str, payload: str, delay: float | None, priority: str,
            user_id: str | None, max_retries: int | None, expires: float | None) -> None:
    """Queue TASK on QUEUE. Example: enqueue email send_email --payload '{"to": "a@b.c", ...}'"""

    def go() -> None:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"--payload is not valid JSON: {exc}") from exc
        job_id = get_queue(queue).enqueue_job(task, data, delay=delay, priority=priority, user_id=user_id,
                                              max_retries=max_retries, expires=expires)
        out.emit({"job_id": job_id}, lambda: job_id)

    run(go)


@cli.command()
@click.argument("job_id")
@click.pass_obj
def status(out: Output, job_id: str) -> None:
    """Show one job."""

    def go() -> None:
        job = get_job(job_id)
        if job is None:
            raise JobNotFoundError(f"Job {job_id} does not exist")
        data = job.to_dict()
        out.emit(data, lambda: "\n".join(f"{k:13} {v}" for k, v in data.items()))

    run(go)


def _when_ms(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if epoch else "-"


def _field_text(name: str, value: bytes) -> Any:
    """One field of a job hash as a person reads it: ``data`` decoded (zlib or not), JSON fields
    parsed, RQ's zlib'd fields (``exc_info``) inflated, anything else as text or a byte count."""
    import zlib

    from core.queue.rq_compat import decode_data

    if name == "data":
        try:
            task_name, kwargs = decode_data(value)
            return [task_name, None, [], kwargs]
        except Exception:  # noqa: BLE001 - written by something else (RQ's pickle): shown as found
            pass
    try:
        text = value.decode()
    except UnicodeDecodeError:
        try:
            text = zlib.decompress(value).decode()
        except (zlib.error, UnicodeDecodeError):
            return f"<{len(value)} bytes, binary>"
    if name in ("fk_result", "fk_progress", "fk_limits", "meta", "fk_hooks", "fk_trace"):
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def job_details(job_id: str) -> dict[str, Any]:
    """Everything known about one job: the decoded job, its Redis hash and its events (this run)."""
    from core.events.stream import EventFilter, start_cursor
    from core.platform import keys

    job = get_job(job_id)
    if job is None:
        raise JobNotFoundError(f"Job {job_id} does not exist (no rq:job:{job_id} in Redis, nothing in the "
                               f"fallback spool; ended jobs expire after JOBS_RESULT_TTL / JOBS_FAILURE_TTL)")
    connection = get_redis()
    key = keys.job(job_id)
    with connection.pipeline(transaction=False) as pipe:
        pipe.hgetall(key)
        pipe.ttl(key)
        raw, ttl = pipe.execute()
    stored = None
    if raw:
        fields = {k.decode(errors="replace"): v for k, v in raw.items()}
        data = fields.get("data") or b""
        stored = {"key": key, "ttl": ttl if ttl >= 0 else None, "data_bytes": len(data),
                  "data_encoding": "json" if data[:1] == b"[" else "zlib",
                  "fields": {name: _field_text(name, value) for name, value in sorted(fields.items())}}
    # start_cursor replays the job's current run: the stream from the job's created_at on (at most
    # JOBS_EVENTS_MAXLEN entries, read in batches), never the whole stream's history before it
    _, events = start_cursor(connection, EventFilter(job_id=job_id), None)
    return {"job": job.to_dict(), "redis": stored, "events": events}


def _show_text(details: dict[str, Any]) -> str:
    job, stored, events = details["job"], details["redis"], details["events"]
    times = {"created_at", "started_at", "completed_at"}
    lines = [f"{k:13} {_when_ms(v) + ' UTC' if k in times and v else ('-' if v is None else v)}"
             for k, v in job.items() if k not in ("payload", "result", "error")]

    def block(title: str, value: Any) -> None:
        text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str, ensure_ascii=False)
        lines.append(f"{title}:")
        lines.extend("  " + line for line in text.splitlines() or [""])

    block("payload", job["payload"])
    block("result", job["result"])
    if job["error"]:
        block("error", job["error"])
    else:
        lines.append("error:        -")
    if stored is None:
        lines.append("redis:        not in Redis (the job is in the fallback spool)")
    else:
        expiry = f"expires in {stored['ttl']} s" if stored["ttl"] is not None else "no expiry"
        lines.append(f"redis:        HGETALL {stored['key']}  ({len(stored['fields'])} fields, data "
                     f"{stored['data_bytes']} B {'plain JSON' if stored['data_encoding'] == 'json' else 'zlib'}, "
                     f"{expiry})")
        width = max(len(name) for name in stored["fields"])
        for name, value in stored["fields"].items():
            shown = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
            if name == "fk_error" and value == job["error"] and "\n" in value:
                shown = f"({len(value.splitlines())} lines: the error above)"
            first, *rest = shown.splitlines() or [""]
            lines.append(f"  {name.ljust(width)}  {first}")
            lines.extend(f"  {' ' * width}  {line}" for line in rest)
    lines.append(f"events ({len(events)}, this run):" if events else "events:       (none in fikiri:events)")
    for event in events:
        extra = event.get("error") or event.get("reason") or event.get("progress") or ""
        lines.append(f"  {_when_ms(event['at'])}  {event['event']:10} {event['status'] or '-':10} "
                     f"{event['id']}  {extra}".rstrip())
    return "\n".join(lines)


@cli.command()
@click.argument("job_id")
@click.pass_obj
def show(out: Output, job_id: str) -> None:
    """Everything about one job, decoded: fields, payload, result, error, its Redis hash and events."""

    def go() -> None:
        details = job_details(job_id)
        out.emit(details, lambda: _show_text(details))

    run(go)


@cli.command()
@click.argument("queue")
@click.option("--limit", default=20, show_default=True, help="groups per page (1-1000)")
@click.option("--page", default=1, show_default=True, help="page number, from 1")
@click.pass_obj
def groups(out: Output, queue: str, limit: int, page: int) -> None:
    """A queue's job groups with jobs waiting or running, largest backlog first."""
    from core.queue.groups import InvalidGroupError, list_groups

    def go() -> None:
        if page < 1:
            raise InvalidGroupError(f"page must be a whole number >= 1, got {page}")
        listed = list_groups(get_queue(queue).short_name, limit=limit, offset=(page - 1) * limit)
        shown = [{**row, "paused": "yes" if row["paused"] else "no"} for row in listed["groups"]]
        out.emit({"queue": queue, "page": page, **listed},
                 lambda: _table(shown, ["group", "waiting", "running", "oldest_age", "weight", "paused"])
                 + f"\n{listed['total']} group(s)")

    run(go)


@cli.command()
@click.argument("queue", required=False)
@click.pass_obj
def stats(out: Output, queue: str | None) -> None:
    """Counts per queue (or one queue)."""

    def go() -> None:
        queues = [get_queue(queue)] if queue else all_queues()
        data = [{"queue": q.short_name, **q.get_stats()} for q in queues]
        shown = [{**row, "paused": "yes" if row["paused"] else "no"} for row in data]
        out.emit(data, lambda: _table(shown, ["queue", "pending_jobs", "delayed_jobs", "active_jobs",
                                             "completed_jobs", "failed_jobs", "canceled_jobs", "limited_jobs",
                                             "latency_seconds", "workers", "paused"]))

    run(go)


@cli.command()
@click.option("--user", "user_id", required=True)
@click.option("--limit", type=click.IntRange(1, 100), default=20)
@click.pass_obj
def recent(out: Output, user_id: str, limit: int) -> None:
    """A user's newest jobs."""
    run(lambda: out.emit([j.to_dict() for j in get_user_jobs(user_id, limit)],
                         lambda: _jobs_table(j.to_dict() for j in get_user_jobs(user_id, limit))))


class _FailedGroup(click.Group):
    """``failed [QUEUE] [filters]`` lists; ``failed retry|delete|export [filters]`` act. A first
    word that is no subcommand is the queue (``failed email``, as before the filters)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            ctx.meta["failed_legacy"] = True  # --json prints the list of jobs, as it did
            args = ["--queue", args[0], *args[1:]]
        return super().parse_args(ctx, args)


def _failed_filters(command: Callable) -> Callable:
    """The filters of every ``failed`` command (core/api/dead_letters.py)."""
    for option in reversed([
        click.option("--queue", default=None, help="email, ai or crm"),
        click.option("--task", default=None, help="the task name"),
        click.option("--error", default=None, help="a substring of the error text"),
        click.option("--user", "user_id", default=None, help="the job's user"),
        click.option("--since", default=None, help="failed at or after: ISO 8601 (no zone: UTC) or epoch seconds"),
        click.option("--until", default=None, help="failed at or before: ISO 8601 or epoch seconds"),
    ]):
        command = option(command)
    return command


def _failed_filter(**values: Any) -> Any:
    from core.api.dead_letters import FailedFilter

    return FailedFilter.parse({k: v for k, v in values.items() if v is not None})


@cli.group(cls=_FailedGroup, invoke_without_command=True)
@_failed_filters
@click.option("--page", type=click.IntRange(1, 100_000), default=1)
@click.option("--limit", type=click.IntRange(1, 100), default=20)
@click.pass_context
def failed(ctx: click.Context, page: int, limit: int, **filters: Any) -> None:
    """Failed jobs matching every filter given, newest failure first. Subcommands: retry, delete, export.

    Example: failed --task send_email --error Timeout --since 2026-12-01"""
    if ctx.invoked_subcommand is not None:
        given = [f"--{name.replace('_id', '')}" for name, value in filters.items() if value is not None]
        if given:  # never a delete of every failed job because the filter sat before the verb
            raise click.UsageError(f"put the filters after the subcommand: failed {ctx.invoked_subcommand} "
                                   f"{' '.join(given)} ...")
        return
    out: Output = ctx.obj

    def go() -> None:
        from core.api.dead_letters import list_failed

        found = list_failed(_failed_filter(**filters), page, limit)
        data = found.to_dict()
        if ctx.meta.get("failed_legacy") and out.as_json:
            out.emit(data["jobs"], str)
            return
        note = (f"{found.total} matching (page {data['page']} of {data['pages']}; {found.scanned} failed jobs looked at"
                f"{'' if found.complete else ', the newest JOBS_FAILED_SCAN_MAX of each queue only'})")
        out.emit(data, lambda: _jobs_table(data["jobs"]) + "\n" + note)

    run(go)


def _failed_action(verb: str) -> Callable:
    @_failed_filters
    @click.option("--dry-run", is_flag=True, help="only count the matching jobs")
    @click.pass_obj
    def command(out: Output, dry_run: bool, **filters: Any) -> None:
        from core.api.dead_letters import delete_failed, retry_failed

        def go() -> None:
            flt = _failed_filter(**filters)
            outcome = (retry_failed if verb == "retry" else delete_failed)(flt, dry_run=dry_run)
            done = outcome["retried" if verb == "retry" else "deleted"]
            if not dry_run:
                audit.record(audit.cli_actor(), f"failed.{verb}", flt.describe(), "cli",
                             detail=f"{done} of {outcome['matched']} matched")
            past = "retried" if verb == "retry" else "deleted"
            out.emit(outcome, lambda: f"{outcome['matched']} failed job(s) match {flt.describe()}" + (
                f"; dry run: nothing {past}" if dry_run else f"; {done} {past}"))

        run(go)

    command.__doc__ = (f"{'Requeue' if verb == 'retry' else 'Delete'} every failed job matching the filters "
                       f"(--dry-run: only count them). One audit entry per real run.")
    return command


failed.command("retry")(_failed_action("retry"))
failed.command("delete")(_failed_action("delete"))


@failed.command("export")
@_failed_filters
@click.option("--output", "-o", "path", default="-", help="file to write (default: stdout)")
def failed_export(path: str, **filters: Any) -> None:
    """Write every matching failed job as JSON Lines (one job a line, newest failure first)."""
    from core.api.dead_letters import export_failed

    def go() -> None:
        flt = _failed_filter(**filters)
        with click.open_file(path, "w") as stream:
            count = 0
            for job in export_failed(flt):
                stream.write(json.dumps(job.to_dict(), default=str, ensure_ascii=False) + "\n")
                count += 1
        if path != "-":
            click.echo(f"wrote {count} failed job(s) to {path}", err=True)

    run(go)


@cli.command()
@click.argument("job_id", required=False)
@click.option("--all", "retry_all", is_flag=True, help="retry every failed job of --queue")
@click.option("--queue", default=None)
@click.pass_obj
def retry(out: Output, job_id: str | None, retry_all: bool, queue: str | None) -> None:
    """Requeue a failed job, or all failed jobs of a queue (--all --queue Q)."""

    def go() -> None:
        if retry_all:
            if not queue or job_id:
                raise click.UsageError("use either JOB_ID or --all --queue QUEUE")
            ids = [j.job_id for j in get_queue(queue).get_failed_jobs(10_000)]
            done = [retry_job(i).job_id for i in ids]
            audit.record(audit.cli_actor(), "retry_all_failed", queue, "cli", detail=f"{len(done)} requeued")
            out.emit({"retried": done}, lambda: f"retried {len(done)} job(s)")
        elif job_id:
            job = retry_job(job_id)
            audit.record(audit.cli_actor(), "retry", job_id, "cli")
            out.emit(job.to_dict(), lambda: f"{job.job_id} {job.status.value}")
        else:
            raise click.UsageError("give a JOB_ID, or --all --queue QUEUE")

    run(go)


@cli.command()
@click.argument("job_id")
@click.pass_obj
def cancel(out: Output, job_id: str) -> None:
    """Cancel a pending or delayed job."""

    def go() -> None:
        job = cancel_job(job_id)
        audit.record(audit.cli_actor(), "cancel", job_id, "cli")
        out.emit(job.to_dict(), lambda: f"{job.job_id} {job.status.value}")

    run(go)


@cli.command()
@click.argument("job_id")
@click.pass_obj
def stop(out: Output, job_id: str) -> None:
    """Stop a job: a running one is ended by its worker, a pending or delayed one is canceled."""

    def go() -> None:
        who = audit.cli_actor()
        job = stop_job(job_id, by=who)
        audit.record(who, "stop", job_id, "cli")
        state = "stopping (its worker ends it at its next heartbeat)" if job.status.value == "running" else job.status.value
        out.emit(job.to_dict(), lambda: f"{job.job_id} {state}")

    run(go)


@cli.group("queue")
def queue_group() -> None:
    """Pause or resume a queue (workers take no new jobs from a paused queue; running ones finish)."""


def _queue_action(verb: str) -> Callable:
    @click.argument("queue")
    @click.pass_obj
    def command(out: Output, queue: str) -> None:
        def go() -> None:
            target = get_queue(queue)
            changed = target.pause() if verb == "pause" else target.resume()
            audit.record(audit.cli_actor(), verb, f"queue:{target.short_name}", "cli")
            state = "paused" if verb == "pause" else "resumed"
            out.emit({"queue": target.short_name, "paused": verb == "pause", "changed": changed},
                     lambda: f"{target.short_name} {state}" + ("" if changed else " (it already was)"))
        run(go)

    return command


queue_group.command("pause")(_queue_action("pause"))
queue_group.command("resume")(_queue_action("resume"))


@cli.group("group")
def group_group() -> None:
    """One job group of a queue: pause, resume, weight (list them with ``groups <queue>``)."""


def _group_action(verb: str) -> Callable:
    @click.argument("queue")
    @click.argument("group")
    @click.pass_obj
    def command(out: Output, queue: str, group: str) -> None:
        def go() -> None:
            target = get_queue(queue)
            changed = target.pause_group(group) if verb == "pause" else target.resume_group(group)
            audit.record(audit.cli_actor(), f"{verb}_group", f"group:{target.short_name}:{group}", "cli")
            state = "paused" if verb == "pause" else "resumed"
            out.emit({"queue": target.short_name, "group": group, "paused": verb == "pause", "changed": changed},
                     lambda: f"group {group} of {target.short_name} {state}" + ("" if changed else " (it already was)"))
        run(go)

    return command


group_group.command("pause")(_group_action("pause"))
group_group.command("resume")(_group_action("resume"))


@group_group.command("weight")
@click.argument("queue")
@click.argument("group")
@click.argument("weight", type=float)
@click.pass_obj
def group_weight(out: Output, queue: str, group: str, weight: float) -> None:
    """Give GROUP WEIGHT turns in the rotation for each turn of a weight-1 group (1 resets it)."""

    def go() -> None:
        target = get_queue(queue)
        target.set_group_weight(group, weight)
        audit.record(audit.cli_actor(), "group_weight", f"group:{target.short_name}:{group}", "cli", detail=str(weight))
        out.emit({"queue": target.short_name, "group": group, "weight": weight},
                 lambda: f"group {group} of {target.short_name}: weight {weight:g}")

    run(go)


@cli.command()
@click.pass_obj
def workers(out: Output) -> None:
    """Workers alive (their registrations, refreshed every heartbeat)."""
    from core.platform import keys

    connection = get_redis()
    names = sorted({keys.worker_name(member) for member in connection.smembers(keys.workers())})
    with connection.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hgetall(keys.worker(name))
        replies = pipe.execute()
    rows = []
    for name, raw in zip(names, replies):
        if not raw:
            continue
        info = {k.decode(): v.decode() for k, v in raw.items()}
        rows.append({"name": name, "state": info.get("state", ""), "queues": info.get("queues", ""),
                     "pid": info.get("pid", ""), "class": info.get("worker_class", ""),
                     "current_jobs": info.get("current_jobs", "0"), "processed": info.get("processed", "0")})
    out.emit(rows, lambda: _table(rows, ["name", "state", "queues", "pid", "class", "current_jobs", "processed"]))


@cli.group()
def scheduler() -> None:
    """Periodic jobs: list, pause, resume, remove, run."""


@scheduler.command("list")
@click.pass_obj
def scheduler_list(out: Output) -> None:
    rows = periodic.list_periodic_jobs()
    out.emit(rows, lambda: _table([{**r, "next_run": _when(r["next_run"]), "last_run": _when(r["last_run"])}
                                   for r in rows], ["id", "task", "queue", "trigger", "next_run", "paused",
                                                    "last_run"]))


verb_action = {"paused": "pause", "resumed": "resume", "removed": "remove", "queued": "run"}


def _periodic_action(action: Callable[[str], Any], verb: str) -> Callable:
    @click.argument("periodic_id")
    @click.pass_obj
    def command(out: Output, periodic_id: str) -> None:
        def go() -> None:
            result = action(periodic_id)
            audit.record(audit.cli_actor(), f"scheduler.{verb_action[verb]}", periodic_id, "cli")
            out.emit({"id": periodic_id, "result": result}, lambda: f"{periodic_id} {verb}")
        run(go)

    return command


scheduler.command("pause")(_periodic_action(periodic.pause_periodic, "paused"))
scheduler.command("resume")(_periodic_action(periodic.resume_periodic, "resumed"))
scheduler.command("remove")(_periodic_action(periodic.remove_periodic, "removed"))
scheduler.command("run")(_periodic_action(periodic.run_periodic_now, "queued"))


@cli.group()
def schedules() -> None:
    """Schedules the host app owns, beside the built-in ones: list, add, remove."""


@schedules.command("list")
@click.pass_obj
def schedules_list(out: Output) -> None:
    """Every schedule, built-in and host (OWNER says which)."""

    def go() -> None:
        rows = periodic.list_periodic()
        out.emit(rows, lambda: _table([{**r, "next_run": _when(r["next_run"])} for r in rows],
                                      ["name", "owner", "task", "queue", "trigger", "overlap", "missed", "next_run",
                                       "paused"]))

    run(go)


@schedules.command("add")
@click.argument("name")
@click.argument("task")
@click.option("--cron", default=None, help="'minute hour day-of-month month day-of-week', e.g. '0 8 * * *'")
@click.option("--every", type=int, default=None, help="seconds between runs (instead of --cron)")
@click.option("--tz", default="UTC", show_default=True, help="IANA time zone of the cron times")
@click.option("--payload", default="{}", help="JSON object of the task's keyword arguments")
@click.option("--queue", default=None, help="only when TASK is registered on several queues")
@click.option("--overlap", type=click.Choice(["skip", "queue"]), default="skip", show_default=True,
              help="skip: no new run while the previous one is pending or running")
@click.option("--missed", type=click.Choice(["run_once", "skip"]), default="run_once", show_default=True,
              help="after downtime: one catch-up run, or none")
@click.pass_obj
def schedules_add(out: Output, name: str, task: str, cron: str | None, every: int | None, tz: str, payload: str,
                  queue: str | None, overlap: str, missed: str) -> None:
    """Register (or update) host schedule NAME running TASK. Example:
    schedules add digest send_daily_digest --cron '0 8 * * *' --tz Africa/Nairobi"""

    def go() -> None:
        try:
            data = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise JobsError(f"--payload is not valid JSON ({exc}); send a JSON object") from exc
        entry = periodic.register_periodic(name, task, cron=cron, every=every, tz=tz, payload=data, queue=queue,
                                           overlap=overlap, missed=missed)
        audit.record(audit.cli_actor(), "schedules.add", entry["id"], "cli", detail=f"{task} {entry['trigger']}")
        out.emit(entry, lambda: f"{name}: {entry['task']} {entry['trigger']}, next run {_when(entry['next_run'])} UTC")

    run(go)


@schedules.command("remove")
@click.argument("name")
@click.pass_obj
def schedules_remove(out: Output, name: str) -> None:
    """Remove host schedule NAME for good (built-in schedules are not removed here)."""

    def go() -> None:
        periodic.unregister_periodic(name)
        audit.record(audit.cli_actor(), "schedules.remove", schedule_id(name), "cli")
        out.emit({"name": name, "removed": True}, lambda: f"{name} removed")

    run(go)


@cli.command("audit")
@click.option("--limit", type=click.IntRange(1, 500), default=50)
@click.pass_obj
def audit_log(out: Output, limit: int) -> None:
    """Operator actions, newest first (API, dashboard and CLI)."""
    rows = audit.recent(limit)
    out.emit(rows, lambda: _table([{**r, "at": _when(r["at"])} for r in rows],
                                  ["at", "who", "action", "target", "source", "detail"]))


@cli.group()
def monitor() -> None:
    """Task metrics: stats, history, failures, clear."""


@monitor.command("stats")
@click.option("--task", default=None)
@click.pass_obj
def monitor_stats(out: Output, task: str | None) -> None:
    data = task_metrics.get_task_stats(task)
    rows = [{"task": name, **values} for name, values in data.items()]
    out.emit(data, lambda: _table(rows, ["task", "total", "succeeded", "failed", "retried", "avg_duration",
                                         "p95_duration", "last_status"]))


@monitor.command("history")
@click.argument("task")
@click.option("--limit", type=click.IntRange(1, 100), default=20)
@click.pass_obj
def monitor_history(out: Output, task: str, limit: int) -> None:
    rows = task_metrics.get_task_history(task, limit)
    out.emit(rows, lambda: _table([{**r, "finished_at": _when(r["finished_at"])} for r in rows],
                                  ["job_id", "status", "duration", "finished_at"]))


@monitor.command("failures")
@click.option("--limit", type=click.IntRange(1, 500), default=20)
@click.option("--hours", type=click.FloatRange(0.01, 720), default=24)
@click.pass_obj
def monitor_failures(out: Output, limit: int, hours: float) -> None:
    rows = task_metrics.get_recent_failures(limit, hours)
    out.emit(rows, lambda: _table([{**r, "finished_at": _when(r["finished_at"])} for r in rows],
                                  ["job_id", "task", "status", "finished_at", "error"]))


@monitor.command("clear")
@click.option("--task", default=None)
@click.pass_obj
def monitor_clear(out: Output, task: str | None) -> None:
    cleared = task_metrics.clear_metrics(task)
    out.emit({"cleared": cleared}, lambda: f"cleared metrics of {cleared} task(s)")


def run_domain(command: Callable[[], None]) -> None:
    """:func:`run`, plus the domain helpers' errors: a bad value exits 2, a missing thing 1."""

    def guarded() -> None:
        try:
            command()
        except LookupError as exc:
            raise JobNotFoundError(str(exc)) from exc
        except ValueError as exc:
            raise JobsError(str(exc)) from exc

    run(guarded)


@cli.group()
def sync() -> None:
    """Gmail sync: queue one for a user."""


@sync.command("user")
@click.argument("user_id")
@click.option("--type", "sync_type", type=click.Choice(["manual", "incremental", "full"]), default="manual",
              help="incremental follows Gmail's history; manual and full list the whole window")
@click.option("--lookback-days", type=click.IntRange(1, 3650), default=None,
              help="the window of a full listing (default EMAIL_SYNC_LOOKBACK_DAYS)")
@click.pass_obj
def sync_user(out: Output, user_id: str, sync_type: str, lookback_days: int | None) -> None:
    """Queue a Gmail sync for USER_ID (the running one's id if a sync is already active)."""
    from email_automation.gmail_sync_jobs import GmailSyncJobManager

    def go() -> None:
        job_id = GmailSyncJobManager().queue_sync_job(user_id, sync_type, lookback_days=lookback_days)
        out.emit({"job_id": job_id, "user_id": user_id}, lambda: job_id)

    run_domain(go)


@cli.group()
def ai() -> None:
    """AI jobs on email threads: one thread, or every unprocessed thread."""


@ai.command("thread")
@click.argument("thread_id")
@click.option("--user", "user_id", default=None, help="needed only when several users have this thread id")
@click.option("--task", "tasks", multiple=True, type=click.Choice(["summarize", "sentiment", "reply", "tasks"]),
              help="repeat for several (default: all four)")
@click.option("--force", is_flag=True, help="run even when the thread has no new messages")
@click.pass_obj
def ai_thread(out: Output, thread_id: str, user_id: str | None, tasks: tuple[str, ...], force: bool) -> None:
    """Queue the AI job for one thread (Gmail thread id THREAD_ID)."""
    from ai_assistant.thread_jobs import queue_thread_ai

    def go() -> None:
        job_id = queue_thread_ai(thread_id, user_id, list(tasks) or None, force)
        out.emit({"job_id": job_id, "thread_id": thread_id}, lambda: job_id)

    run_domain(go)


@ai.command("bulk")
@click.option("--user", "user_id", default=None, help="only this user's threads")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, help="most threads to queue")
@click.pass_obj
def ai_bulk(out: Output, user_id: str | None, limit: int) -> None:
    """Queue the bulk run: one AI job per unprocessed thread, at most --limit."""
    payload: dict[str, Any] = {"limit": limit, **({"user_id": user_id} if user_id else {})}

    def go() -> None:
        job_id = get_queue("ai").enqueue_job("process_unprocessed_threads", payload)
        out.emit({"job_id": job_id, **payload}, lambda: job_id)

    run(go)



# --- webhooks (core/events/webhooks.py) ---------------------------------------------------------------
@cli.group()
def webhooks() -> None:
    """Outbound webhooks: job events POSTed, signed, to your URLs."""


def _names_option(values: tuple[str, ...]) -> list[str] | None:
    """Repeated or comma-separated values; none given means anything."""
    names = [part.strip() for value in values for part in value.split(",") if part.strip()]
    return names or None


@webhooks.command("add")
@click.argument("url")
@click.option("--secret", default=None, help="HMAC-SHA256 key, 16-256 characters (default: one is generated)")
@click.option("--task", "tasks", multiple=True, help="only this task's events (repeatable or comma-separated)")
@click.option("--user", "users", multiple=True, help="only this user's jobs (repeatable or comma-separated)")
@click.option("--event", "events", multiple=True, help="only this event, e.g. completed (repeatable or comma-separated)")
@click.pass_obj
def webhooks_add(out: Output, url: str, secret: str | None, tasks: tuple[str, ...], users: tuple[str, ...],
                 events: tuple[str, ...]) -> None:
    """Register URL; prints its id and secret (the secret is shown only now)."""
    from core.events import webhooks as hooks

    def go() -> None:
        hook = hooks.register_webhook(url, secret, _names_option(tasks), _names_option(users), _names_option(events))
        audit.record(audit.cli_actor(), "webhooks.add", hook["id"], "cli", detail=hook["url"])
        out.emit(hook, lambda: f"webhook {hook['id']} -> {hook['url']}\nsecret: {hook['secret']}")

    run(go)


@webhooks.command("list")
@click.pass_obj
def webhooks_list(out: Output) -> None:
    """Registered webhooks (secrets hidden)."""
    from core.events import webhooks as hooks

    def go() -> None:
        rows = hooks.list_webhooks()
        shown = [{**r, **{k: ",".join(r[k]) if r[k] else "*" for k in ("tasks", "users", "events")},
                  "created": _when(r["created_at"])} for r in rows]
        out.emit(rows, lambda: _table(shown, ["id", "url", "tasks", "users", "events", "created"]))

    run(go)


@webhooks.command("remove")
@click.argument("webhook_id")
@click.pass_obj
def webhooks_remove(out: Output, webhook_id: str) -> None:
    """Remove a webhook and its recorded attempts."""
    from core.events import webhooks as hooks

    def go() -> None:
        hooks.remove_webhook(webhook_id)
        audit.record(audit.cli_actor(), "webhooks.remove", webhook_id, "cli")
        out.emit({"id": webhook_id, "removed": True}, lambda: f"removed webhook {webhook_id}")

    run(go)


@webhooks.command("attempts")
@click.argument("webhook_id")
@click.option("--limit", type=click.IntRange(1, 500), default=20)
@click.pass_obj
def webhooks_attempts(out: Output, webhook_id: str, limit: int) -> None:
    """A webhook's delivery attempts, newest first."""
    from core.events import webhooks as hooks

    def go() -> None:
        rows = hooks.webhook_attempts(webhook_id, limit)
        shown = [{**r, "at": _when(r["at"]), "error": (r.get("error") or "")[:60]} for r in rows]
        out.emit(rows, lambda: _table(shown, ["at", "event", "event_id", "status", "outcome", "duration_ms", "error"]))

    run(go)


if __name__ == "__main__":
    cli()
