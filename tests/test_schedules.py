"""Schedules the host app owns (issue 13, item 4): cron in IANA zones across DST, built-in and
host schedules side by side, overlap and missed-run policies, two schedulers, CLI and HTTP.

Real Redis per test; time is injected (``run_due(now=...)``), so nothing waits for a clock."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import redis

from core.api.jobs import get_job
from core.errors import InvalidScheduleError, JobNotFoundError, JobsError, UnknownTaskError
from core.platform.auth import issue_user_token
from core.schedule.cron import next_fire, parse_cron
from core.schedule.periodic import (
    JsonScheduler,
    list_periodic,
    register_periodic,
    register_periodic_jobs,
    remove_periodic,
    unregister_periodic,
)
from tests.conftest import ADMIN_TOKEN
from tests.servers import ROOT, wait_until, worker_env

SCHEDULED = "rq:scheduler:scheduled_jobs"
BUILTIN_IDS = {"periodic-email-sync", "periodic-ai-processing", "periodic-nightly-cleanup", "periodic-daily-digest",
               "periodic-ai-threads", "periodic-user-digests", "periodic-failure-alerts", "periodic-domain-retention"}


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")


def fire_times(client: redis.Redis, scheduler: JsonScheduler, periodic_id: str, count: int) -> list[str]:
    """Step the injected clock to each next run; each step must enqueue exactly one run, and a
    pass one second before it none."""
    times = []
    for _ in range(count):
        due = client.zscore(SCHEDULED, periodic_id)
        assert scheduler.run_due(now=due - 1) == []
        assert len(scheduler.run_due(now=due)) == 1
        times.append(iso(due))
    return times


# --- cron parsing (no Redis) -----------------------------------------------------------------------
def test_cron_fields_lists_ranges_steps_names_and_shorthands():
    expr = parse_cron("*/20 9-17/4 1,15 jan-mar mon")
    assert sorted(expr.minutes) == [0, 20, 40] and sorted(expr.hours) == [9, 13, 17]
    assert sorted(expr.months) == [1, 2, 3] and expr.weekdays == {1}
    assert parse_cron("0 0 * * 7").weekdays == {0}  # 7 is Sunday, like 0
    assert parse_cron("@daily").minutes == {0} and parse_cron("@daily").hours == {0}
    zone = ZoneInfo("UTC")
    # Both day fields restricted: either matches (Vixie cron). 2024-01-01 is a Monday.
    after = utc("2023-12-31T12:00:00")
    got = [iso(after := next_fire(parse_cron("0 12 15 * mon"), zone, after)) for _ in range(3)]
    assert got == ["2024-01-01 12:00", "2024-01-08 12:00", "2024-01-15 12:00"]
    assert iso(next_fire(parse_cron("0 0 29 2 *"), zone, utc("2025-01-01T00:00:00"))) == "2028-02-29 00:00"


@pytest.mark.parametrize(("text", "why"), [
    ("0 8 * *", "4 field(s), not 5"),
    ("61 * * * *", "minute value 61 is out of range 0-59"),
    ("0 24 * * *", "hour value 24 is out of range 0-23"),
    ("0 8 * * funday", "day-of-week value 'funday' is not a number or a name"),
    ("5-1 * * * *", "range '5-1' runs backwards"),
    ("*/0 * * * *", "step '0' must be from 1 to 60"),
    ("0 0 30 2 *", "never occurs"),
    ("0 ８ * * *", "hour item"),  # a full-width digit is not an ASCII number
])
def test_bad_cron_names_the_field_and_the_accepted_form(text, why):
    with pytest.raises(InvalidScheduleError, match="accepted: 5 fields") as caught:
        parse_cron(text)
    assert why in caught.value.message and caught.value.http_status == 400


# --- DST, with a real scheduler pass on an injected clock ------------------------------------------
def test_new_york_cron_across_spring_forward(jobs_env):
    client = jobs_env.client()
    scheduler = JsonScheduler()
    register_periodic("ny-230", "record_run", cron="30 2 * * *", tz="America/New_York",
                      payload={"key": "test:ny"}, overlap="queue", now=utc("2024-03-08T12:00:00"))
    # 02:30 does not exist on 10 March 2024: it runs once, when the clocks jump to 03:00 EDT.
    assert fire_times(client, scheduler, "periodic-ny-230", 4) == [
        "2024-03-09 07:30", "2024-03-10 07:00", "2024-03-11 06:30", "2024-03-12 06:30"]
    register_periodic("ny-0800", "record_run", cron="0 8 * * *", tz="America/New_York",
                      payload={"key": "test:ny8"}, overlap="queue", now=utc("2024-03-08T12:00:00"))
    assert fire_times(client, scheduler, "periodic-ny-0800", 4) == [  # 08:00 EST is 13:00 UTC, EDT 12:00
        "2024-03-08 13:00", "2024-03-09 13:00", "2024-03-10 12:00", "2024-03-11 12:00"]
    # Every run was enqueued on the real queue under its own id, named after its due time.
    run = get_job(f"periodic-ny-230-{int(utc('2024-03-10T07:00:00'))}")
    assert run.status.value == "pending" and run.task_name == "record_run" and run.payload == {"key": "test:ny"}


def test_new_york_cron_across_fall_back_runs_the_repeated_time_once(jobs_env):
    client = jobs_env.client()
    scheduler = JsonScheduler()
    register_periodic("ny-130", "record_run", cron="30 1 * * *", tz="America/New_York",
                      payload={"key": "test:ny"}, overlap="queue", now=utc("2024-11-02T12:00:00"))
    # 01:30 happens twice on 3 November 2024 (EDT, then EST): it runs at the first only.
    assert fire_times(client, scheduler, "periodic-ny-130", 1) == ["2024-11-03 05:30"]
    for repeated in ("2024-11-03T06:30:00", "2024-11-03T06:59:00"):  # 01:30 and 01:59 EST
        assert scheduler.run_due(now=utc(repeated)) == []
    assert fire_times(client, scheduler, "periodic-ny-130", 2) == ["2024-11-04 06:30", "2024-11-05 06:30"]


def test_zone_without_dst_and_interval_keeps_its_phase(jobs_env):
    entry = register_periodic("nairobi", "record_run", cron="0 8 * * *", tz="Africa/Nairobi",
                              payload={"key": "test:n"}, now=utc("2024-06-01T00:00:00"))
    assert iso(entry["next_run"]) == "2024-06-01 05:00" and entry["trigger"] == "cron 0 8 * * * Africa/Nairobi"
    t0 = utc("2024-06-01T00:00:00")
    entry = register_periodic("tick", "record_run", every=60, payload={"key": "test:t"}, overlap="queue", now=t0)
    assert entry["next_run"] == t0 and entry["trigger"] == "every 1 min"
    scheduler = JsonScheduler()
    scheduler.run_due(now=t0 + 7)  # a late pass: the next run stays on the minute
    assert jobs_env.client().zscore(SCHEDULED, "periodic-tick") == t0 + 60


# --- built-in and host side by side ------------------------------------------------------------------
def test_host_schedule_survives_builtin_registration_and_removals_stay_apart(jobs_env):
    client = jobs_env.client()
    register_periodic_jobs()
    register_periodic("host-report", "record_run", cron="0 6 * * 1", tz="Europe/Berlin", payload={"key": "test:h"})
    register_periodic_jobs()  # what every scheduler start does
    entries = {e["id"]: e for e in list_periodic()}
    assert set(entries) == BUILTIN_IDS | {"periodic-host-report"}
    assert entries["periodic-host-report"]["owner"] == "host" and entries["periodic-host-report"]["registered"]
    assert {entries[i]["owner"] for i in BUILTIN_IDS} == {"builtin"}
    assert client.zcard(SCHEDULED) == len(BUILTIN_IDS) + 1

    remove_periodic("periodic-daily-digest")  # a built-in: unscheduled until the next registration
    assert client.zscore(SCHEDULED, "periodic-host-report") is not None
    unregister_periodic("host-report")
    assert client.zscore(SCHEDULED, "periodic-host-report") is None
    assert {m.decode() for m in client.zrange(SCHEDULED, 0, -1)} == BUILTIN_IDS - {"periodic-daily-digest"}
    register_periodic_jobs()
    assert {m.decode() for m in client.zrange(SCHEDULED, 0, -1)} == BUILTIN_IDS
    assert "periodic-host-report" not in {e["id"] for e in list_periodic()}
    with pytest.raises(JobNotFoundError, match="no host schedule 'host-report'"):
        unregister_periodic("host-report")
    with pytest.raises(JobNotFoundError, match="no host schedule 'email-sync'"):
        unregister_periodic("email-sync")  # built-ins are not removed through the host's API


def test_registration_is_idempotent_and_a_change_reschedules(jobs_env):
    first = register_periodic("digest", "record_run", cron="0 8 * * *", tz="Africa/Nairobi", payload={"key": "k"},
                              now=utc("2024-06-01T00:00:00"))
    again = register_periodic("digest", "record_run", cron="0 8 * * *", tz="Africa/Nairobi", payload={"key": "k"},
                              now=utc("2024-06-03T00:00:00"))
    assert again["next_run"] == first["next_run"]  # unchanged: the next run stays
    changed = register_periodic("digest", "record_run", cron="0 9 * * *", tz="Africa/Nairobi", payload={"key": "k"},
                                now=utc("2024-06-03T00:00:00"))
    assert iso(changed["next_run"]) == "2024-06-03 06:00"


@pytest.mark.parametrize(("kwargs", "error", "says"), [
    ({"name": "bad name", "cron": "0 8 * * *"}, InvalidScheduleError, "bad schedule name 'bad name': use 1-64"),
    ({"name": "email-sync", "every": 60}, InvalidScheduleError, "taken by a built-in"),
    ({"task": "no_such_task", "cron": "0 8 * * *"}, UnknownTaskError, "unknown task 'no_such_task'; registered: email:"),
    ({"cron": "0 8 * *"}, InvalidScheduleError, "bad cron '0 8 * *'"),
    ({"cron": "0 8 * * *", "tz": "Mars/Olympus"}, InvalidScheduleError,
     "unknown time zone 'Mars/Olympus'; accepted: an IANA time zone"),
    ({"every": 0}, InvalidScheduleError, "bad interval '0'; accepted: whole seconds from 1"),
    ({"every": 1.5}, InvalidScheduleError, "bad interval '1.5'"),
    ({"every": 60, "interval": 60}, InvalidScheduleError, "not both"),
    ({}, InvalidScheduleError, "exactly one of cron"),
    ({"every": 60, "overlap": "parallel"}, InvalidScheduleError, "unknown overlap policy 'parallel'; accepted: skip, queue"),
    ({"every": 60, "missed": "all"}, InvalidScheduleError, "unknown missed-run policy 'all'; accepted: run_once, skip"),
    ({"every": 60, "queue": "sms"}, InvalidScheduleError, "unknown queue 'sms'; accepted: email, ai, crm"),
    ({"every": 60, "payload": [1]}, JobsError, "payload must be a JSON object"),
])
def test_bad_input_is_a_400_naming_the_value(jobs_env, kwargs, error, says):
    arguments = {"name": "ok-name", "task": "record_run", "payload": {"key": "k"}, **kwargs}
    with pytest.raises(error) as caught:
        register_periodic(arguments.pop("name"), arguments.pop("task"), **arguments)
    assert says in caught.value.message and caught.value.http_status == 400
    assert jobs_env.client().zcard(SCHEDULED) == 0


# --- policies --------------------------------------------------------------------------------------
def test_overlap_skip_waits_for_the_previous_run_and_queue_does_not(jobs_env, start_worker):
    client = jobs_env.client()
    t0 = time.time()
    register_periodic("one-at-a-time", "record_run", every=60, payload={"key": "test:skip"}, now=t0)
    register_periodic("pile-up", "record_run", every=60, payload={"key": "test:queue"}, overlap="queue", now=t0)
    scheduler = JsonScheduler()
    assert sorted(scheduler.run_due(now=t0)) == ["periodic-one-at-a-time", f"periodic-pile-up-{int(t0)}"]
    # No worker yet: both first runs are still pending a minute later.
    assert scheduler.run_due(now=t0 + 60) == [f"periodic-pile-up-{int(t0) + 60}"]
    start_worker("email")
    wait_until(lambda: client.llen("test:skip") == 1 and client.llen("test:queue") == 2, timeout=30)
    wait_until(lambda: get_job("periodic-one-at-a-time").status.is_final, timeout=10)
    assert sorted(scheduler.run_due(now=t0 + 120)) == ["periodic-one-at-a-time", f"periodic-pile-up-{int(t0) + 120}"]
    wait_until(lambda: client.llen("test:skip") == 2 and client.llen("test:queue") == 3, timeout=30)


def test_missed_runs_after_downtime_run_once_or_skip(jobs_env):
    client = jobs_env.client()
    t0 = utc("2024-06-01T00:00:00")
    for name, missed in (("catch-up", "run_once"), ("no-catch-up", "skip")):
        register_periodic(name, "record_run", every=60, payload={"key": "k"}, overlap="queue", missed=missed, now=t0)
        register_periodic(f"{name}-cron", "record_run", cron="0 * * * *", payload={"key": "k"}, overlap="queue",
                          missed=missed, now=t0 - 1)
    scheduler = JsonScheduler()
    down_until = t0 + 3 * 3600 + 5  # the scheduler was down for three hours
    ran = sorted(scheduler.run_due(now=down_until))
    assert ran == [f"periodic-catch-up-{int(t0)}", f"periodic-catch-up-cron-{int(t0)}"]  # one run each, not 180
    for name in ("catch-up", "no-catch-up"):
        assert client.zscore(SCHEDULED, f"periodic-{name}") == t0 + 181 * 60  # back on the minute
        assert client.zscore(SCHEDULED, f"periodic-{name}-cron") == t0 + 4 * 3600
    # On time again: both policies run.
    assert len(scheduler.run_due(now=t0 + 181 * 60)) == 2


def test_two_schedulers_enqueue_each_run_once(jobs_env):
    client = jobs_env.client()
    t0 = utc("2024-06-01T00:00:00")
    register_periodic("shared", "record_run", every=60, payload={"key": "k"}, overlap="queue", now=t0)
    register_periodic("shared-ny", "record_run", cron="*/5 * * * *", tz="America/New_York", payload={"key": "k"},
                      overlap="queue", now=t0 - 1)
    schedulers = [JsonScheduler(connection=redis.Redis.from_url(jobs_env.url)) for _ in range(2)]
    for step in range(10):
        now = t0 + step * 60
        barrier = threading.Barrier(2)
        results: list[list[str]] = [[], []]

        def run(i: int, now: float = now, barrier: threading.Barrier = barrier, results=results) -> None:
            barrier.wait()
            results[i] = schedulers[i].run_due(now=now)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results[0]) + len(results[1]) == (2 if step % 5 == 0 else 1), (step, results)
    queued = [i.decode() for i in client.lrange("rq:queue:fikiri:email", 0, -1)]
    assert len(queued) == len(set(queued)) == 12


def test_the_scheduler_process_runs_a_host_schedule_beside_the_builtins(jobs_env, tmp_path):
    register_periodic("from-host", "record_run", every=3600, payload={"key": "test:p"})
    done = subprocess.run([sys.executable, "scripts/periodic_scheduler.py", "--once"], cwd=ROOT,
                          env=worker_env(jobs_env.url), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    client = jobs_env.client()
    queued = [i.decode() for i in client.lrange("rq:queue:fikiri:email", 0, -1)]
    assert "periodic-from-host" in queued and "periodic-email-sync" in queued
    assert client.zcard(SCHEDULED) == len(BUILTIN_IDS) + 1


# --- CLI --------------------------------------------------------------------------------------------
def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.jobs", *args], cwd=ROOT, env=worker_env(redis_url),
                          capture_output=True, text=True, timeout=60)


def test_cli_add_list_remove_and_bad_input(jobs_env):
    added = cli(jobs_env.url, "--json", "schedules", "add", "digest", "record_run", "--cron", "0 8 * * *",
                "--tz", "Africa/Nairobi", "--payload", '{"key": "test:digest"}')
    assert added.returncode == 0, added.stderr
    entry = json.loads(added.stdout)
    assert entry["id"] == "periodic-digest" and entry["owner"] == "host" and entry["tz"] == "Africa/Nairobi"
    assert datetime.fromtimestamp(entry["next_run"], UTC).strftime("%H:%M") == "05:00"
    table = cli(jobs_env.url, "schedules", "list").stdout
    assert "digest" in table and "host" in table and "cron 0 8 * * * Africa/Nairobi" in table

    bad_tz = cli(jobs_env.url, "schedules", "add", "x", "record_run", "--cron", "0 8 * * *", "--tz", "Mars/Olympus")
    assert bad_tz.returncode == 2 and "unknown time zone 'Mars/Olympus'" in bad_tz.stderr
    bad_task = cli(jobs_env.url, "schedules", "add", "x", "nope", "--every", "60")
    assert bad_task.returncode == 2 and "unknown task 'nope'" in bad_task.stderr
    bad_cron = cli(jobs_env.url, "schedules", "add", "x", "record_run", "--cron", "99 * * * *")
    assert bad_cron.returncode == 2 and "minute value 99 is out of range 0-59" in bad_cron.stderr
    bad_name = cli(jobs_env.url, "schedules", "add", "no/slash", "record_run", "--every", "60")
    assert bad_name.returncode == 2 and "bad schedule name 'no/slash'" in bad_name.stderr

    assert cli(jobs_env.url, "schedules", "remove", "digest").returncode == 0
    gone = cli(jobs_env.url, "schedules", "remove", "digest")
    assert gone.returncode == 1 and "no host schedule 'digest'" in gone.stderr
    assert jobs_env.client().zcard(SCHEDULED) == 0


# --- HTTP -------------------------------------------------------------------------------------------
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_http_admin_adds_lists_shows_and_removes(client):
    body = {"name": "digest", "task": "record_run", "cron": "0 8 * * *", "tz": "Africa/Nairobi",
            "payload": {"key": "test:digest"}, "missed": "skip"}
    created = client.post("/api/jobs/schedules", json=body, headers=ADMIN)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["data"]["owner"] == "host" and created.get_json()["data"]["missed"] == "skip"
    assert client.post("/api/jobs/schedules", json=body, headers=ADMIN).status_code == 200  # unchanged
    listed = client.get("/api/jobs/schedules", headers=ADMIN).get_json()["data"]["schedules"]
    assert [s["name"] for s in listed if s["owner"] == "host"] == ["digest"]
    shown = client.get("/api/jobs/schedules/digest", headers=ADMIN).get_json()["data"]
    assert shown["trigger"] == "cron 0 8 * * * Africa/Nairobi" and shown["registered"] is True
    assert client.delete("/api/jobs/schedules/digest", headers=ADMIN).status_code == 200
    missing = client.delete("/api/jobs/schedules/digest", headers=ADMIN)
    assert missing.status_code == 404 and "no host schedule 'digest'" in missing.get_json()["error"]["message"]
    assert client.delete("/api/jobs/schedules/email-sync", headers=ADMIN).status_code == 404
    audit = client.get("/api/jobs/audit", headers=ADMIN).get_json()["data"]["entries"]
    assert [a["action"] for a in audit][:3] == ["schedules.remove", "schedules.update", "schedules.add"]


def test_http_needs_the_admin_token(client):
    user = {"Authorization": f"Bearer {issue_user_token('u1')}"}  # signed with the test SECRET_KEY
    body = {"name": "digest", "task": "record_run", "every": 60}
    assert client.post("/api/jobs/schedules", json=body, headers=user).status_code == 403
    assert client.get("/api/jobs/schedules", headers=user).status_code == 403
    assert client.delete("/api/jobs/schedules/digest", headers=user).status_code == 403
    assert client.get("/api/jobs/schedules").status_code == 401


@pytest.mark.parametrize(("body", "says"), [
    ({"name": "d", "task": "record_run", "cron": "0 8 * *"}, "bad cron '0 8 * *': it has 4 field(s)"),
    ({"name": "d", "task": "record_run", "cron": "0 8 * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ({"name": "d", "task": "record_run", "every": -5}, "bad interval '-5'"),
    ({"name": "d", "task": "record_run", "every": "often"}, "bad interval 'often'"),
    ({"name": "d", "task": "nope", "every": 60}, "unknown task 'nope'; registered:"),
    ({"name": "../d", "task": "record_run", "every": 60}, "bad schedule name '../d'"),
    ({"name": "d", "task": "record_run", "every": 60, "when": "soon"}, "unknown field(s) 'when'; accepted: name, task"),
    ({"task": "record_run", "every": 60}, "missing field(s) name"),
    ({"name": "d", "task": "record_run", "every": 60, "overlap": 1}, "unknown overlap policy '1'"),
])
def test_http_bad_input_is_a_400_with_a_clear_message(client, body, says):
    response = client.post("/api/jobs/schedules", json=body, headers=ADMIN)
    assert response.status_code == 400, response.get_json()
    assert says in response.get_json()["error"]["message"]
    bad_path = client.get("/api/jobs/schedules/a.b", headers=ADMIN)
    assert bad_path.status_code == 400 and "bad schedule name 'a.b'" in bad_path.get_json()["error"]["message"]
