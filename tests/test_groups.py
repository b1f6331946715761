"""Job groups (issue 23): round-robin across groups, weights, group_concurrency, pausing a group,
and the bookkeeping (waiting lists, rotation, running counts) kept exact by claim, finish, cancel,
delete and the abandoned-job sweep. Real redis-server; claims go through the real claim script
(``lifecycle.claim``, what every worker class calls) so the order is checked exactly, and real
worker processes run the end-to-end and fault-loop tests."""

from __future__ import annotations

import random
import time

import pytest
import redis

from core.api.jobs import cancel_job, delete_job, get_job
from core.api.queues import email_queue
from core.config import get_settings
from core.errors import InvalidPayloadError, JobsError
from core.platform import keys
from core.platform.connection import get_redis
from core.queue import lifecycle
from core.queue.groups import InvalidGroupError
from core.queue.job_model import JobStatus
from tests.servers import RedisServer, point_this_process_at, wait_until

Q = email_queue


def enqueue(tenant: str, n: int, key: str = "test:g", **options) -> list[str]:
    return Q.enqueue_many("group_mark", [{"key": key, "item": f"{tenant}-{i}", "tenant": tenant}
                                         for i in range(n)], **options)


def claim(n: int = 1) -> list[lifecycle.ClaimedJob]:
    return list(lifecycle.claim(get_redis(), "w", "c", [Q.name], n, 300))


def tenants(claimed: list[lifecycle.ClaimedJob]) -> list[str]:
    return [job.kwargs.get("tenant", "-") for job in claimed]


def finish(job: lifecycle.ClaimedJob) -> None:
    assert lifecycle.finish(get_redis(), job, lifecycle.AttemptResult(ok=True)) is not None


def group_keys(client=None) -> list[str]:
    """Every group key left in Redis (waiting lists, rotations, running counts): idle groups leave none."""
    client = client or get_redis()
    prefix = get_settings().queue_prefix
    return [k.decode() for p in ("gwait", "grot", "grun") for k in client.scan_iter(f"{prefix}:{p}:*")]


def test_one_tenants_backlog_does_not_starve_the_others_claims_go_round_robin(jobs_env):
    enqueue("heavy", 50)
    enqueue("a", 2)
    enqueue("b", 2)
    plain = Q.enqueue_job("add", {"a": 1, "b": 2})  # ungrouped: one more member of the rotation
    order = tenants(claim(5))
    assert sorted(order[:4]) == ["-", "a", "b", "heavy"], order  # every group got a turn first
    order += tenants(claim(3))
    assert order.count("a") == 2 and order.count("b") == 2 and order.count("-") == 1, order
    assert get_job(plain).status == JobStatus.RUNNING
    listed = Q.groups()
    assert listed[0]["group"] == "heavy" and listed[0]["waiting"] == 47 and listed[0]["running"] == 3
    assert {g["group"] for g in listed} == {"heavy", "a", "b"}
    assert Q.get_stats()["pending_jobs"] == 47  # grouped jobs waiting are counted


def test_priorities_come_first_then_the_rotation(jobs_env):
    enqueue("a", 3)
    enqueue("b", 1, priority="high")
    enqueue("c", 1, priority="low")
    claimed = claim(5)
    assert tenants(claimed) == ["b", "a", "a", "a", "c"]
    assert [job.priority for job in claimed] == ["high", "normal", "normal", "normal", "low"]


def test_group_concurrency_skips_the_group_and_the_rotation_goes_on(jobs_env):
    enqueue("a", 5, group_concurrency=2)
    enqueue("b", 3)
    first = claim(10)
    assert sorted(tenants(first)) == ["a", "a", "b", "b", "b"]  # a at its limit is skipped, not parked
    assert claim(10) == []
    assert get_redis().hget(keys.group_running(Q.name), "a") == b"2"
    assert get_job(enqueue("a", 1, group_concurrency=2)[0]).status == JobStatus.PENDING  # still waiting, not delayed
    finish(next(j for j in first if j.kwargs["tenant"] == "a"))
    assert tenants(claim(10)) == ["a"]
    assert get_redis().hget(keys.group_running(Q.name), "a") == b"2"


def test_weights_give_a_paying_tenant_a_larger_share(jobs_env):
    enqueue("paying", 30)
    enqueue("free", 30)
    Q.set_group_weight("paying", 3)
    order = tenants(claim(20))
    assert order.count("paying") == 15 and order.count("free") == 5, order
    Q.set_group_weight("paying", 1)
    order = tenants(claim(10))
    assert abs(order.count("paying") - order.count("free")) <= 1, order


def test_pause_group_holds_one_tenant_and_resume_lets_it_run(jobs_env):
    enqueue("a", 3)
    enqueue("b", 3)
    assert Q.pause_group("a") is True and Q.pause_group("a") is False
    assert tenants(claim(10)) == ["b", "b", "b"]
    assert [g["paused"] for g in Q.groups() if g["group"] == "a"] == [True]
    assert Q.resume_group("a") is True
    assert tenants(claim(10)) == ["a", "a", "a"]


def test_a_held_group_gets_no_burst_of_turns_when_let_go(jobs_env):
    enqueue("a", 10)
    enqueue("b", 10)
    Q.pause_group("a")
    assert tenants(claim(5)) == ["b"] * 5
    Q.resume_group("a")
    order = tenants(claim(6))
    assert order.count("a") == 3 and order.count("b") == 3, order  # round-robin again, no catch-up


def test_cancel_delete_and_fail_keep_the_waiting_list_and_rotation_exact(jobs_env):
    ids = enqueue("a", 3)
    other = enqueue("b", 1)
    assert cancel_job(ids[0]).status == JobStatus.CANCELED
    delete_job(ids[1])
    Q.fail_job(ids[2], "by hand", retry=False)
    assert [g["group"] for g in Q.groups()] == ["b"]
    assert not get_redis().exists(keys.group_waiting(Q.name, "normal", "a"))
    assert get_redis().zscore(keys.group_rotation(Q.name, "normal"), "a") is None
    assert tenants(claim(5)) == ["b"]
    assert get_job(other[0]).status == JobStatus.RUNNING


def test_abandoned_and_released_jobs_return_to_their_group_with_the_running_count_exact(jobs_env):
    enqueue("a", 2, group_concurrency=1)
    [job] = claim(5)
    assert get_redis().hget(keys.group_running(Q.name), "a") == b"1"
    lifecycle.release(get_redis(), [job], "worker stopping")  # back at the head of the queue's list
    assert get_redis().hget(keys.group_running(Q.name), "a") is None
    again = claim(5)
    assert len(again) == 1 and again[0].kwargs["tenant"] == "a"  # group_concurrency=1 still holds
    # an expired lease: the sweep takes it back, counted, and the group's running count drops
    get_redis().zadd(keys.started(Q.name), {again[0].member: 1})
    assert [outcome for _id, _task, outcome in lifecycle.abandon_expired(get_redis(), Q.name)] == ["stalled"]
    assert get_redis().hget(keys.group_running(Q.name), "a") is None
    rest = claim(5)
    assert len(rest) == 1
    finish(rest[0])
    rest2 = claim(5)
    assert len(rest2) == 1
    finish(rest2[0])
    assert claim(5) == [] and group_keys() == []  # idle: no group key is left


def test_ungrouped_queues_behave_as_before_and_leave_no_group_keys(jobs_env):
    ids = [Q.enqueue_job("add", {"a": i, "b": 1}) for i in range(5)]
    claimed = claim(5)
    assert [job.job_id for job in claimed] == ids  # FIFO, one batch
    assert group_keys() == []
    assert get_redis().llen(keys.queue(Q.name)) == 0


def test_bad_group_options_are_clear_errors(jobs_env):
    with pytest.raises(InvalidGroupError, match="group_concurrency must be a whole number from 1 to 10000, got 0"):
        Q.enqueue_job("add", {"a": 1, "b": 2}, group="x", group_concurrency=0)
    with pytest.raises(InvalidGroupError, match="group_concurrency needs group="):
        Q.enqueue_job("add", {"a": 1, "b": 2}, group_concurrency=2)
    with pytest.raises(InvalidPayloadError, match="group '\\{tenant\\}' needs payload field 'tenant'"):
        Q.enqueue_job("add", {"a": 1, "b": 2}, group="{tenant}")
    with pytest.raises(InvalidPayloadError, match="group"):
        Q.enqueue_job("add", {"a": 1, "b": 2}, group="bad group!")
    with pytest.raises(InvalidGroupError, match="weight must be a number above 0"):
        Q.set_group_weight("a", 0)
    with pytest.raises(InvalidGroupError, match="limit must be a whole number"):
        Q.groups(limit=0)
    for exc in (InvalidGroupError,):
        assert issubclass(exc, JobsError) and exc.http_status == 400
    assert get_redis().llen(keys.queue(Q.name)) == 0 and group_keys() == []  # nothing was written


def test_group_from_user_id_when_the_payload_has_none(jobs_env):
    job_id = Q.enqueue_job("add", {"a": 1, "b": 2}, user_id="u7", group="{user_id}")
    assert get_redis().hget(keys.job(job_id), "fk_group") == b"u7"
    assert [g["group"] for g in Q.groups()] == ["u7"] and Q.groups()[0]["oldest_age"] >= 0


def test_workers_run_every_grouped_job_fairly_end_to_end(jobs_env, start_worker):
    enqueue("heavy", 200, key="test:e2e")
    light = [j for t in ("l1", "l2", "l3") for j in enqueue(t, 3, key="test:e2e")]
    start_worker("email", "--concurrency", "2")
    wait_until(lambda: get_redis().scard("test:e2e") == 209, timeout=120, interval=0.2, message="209 jobs done")
    order = [x.decode().split("|")[0] for x in get_redis().lrange("test:e2e:order", 0, -1)]
    last_light = max(i for i, t in enumerate(order) if t != "heavy")
    assert last_light < 40, order[:50]  # the light tenants' 9 jobs ran among the first starts, not after 200
    assert all(get_job(j).status == JobStatus.COMPLETED for j in light)
    wait_until(lambda: group_keys() == [], timeout=10, message="idle groups to leave no keys")


def snapshot_is_exact(client, tenant_names: list[str], total: int) -> None:
    """One MULTI snapshot: every job is in exactly one place, and the groups' running counts sum to
    the in-flight entries (every job here is grouped), each within its group_concurrency of 2."""
    full = Q.name
    with client.pipeline(transaction=True) as pipe:
        for tenant in tenant_names:
            pipe.llen(keys.group_waiting(full, "normal", tenant))
        pipe.llen(keys.queue(full))
        pipe.zcard(keys.scheduled(full))
        pipe.zcard(keys.started(full))
        pipe.zcard(keys.finished(full))
        pipe.hgetall(keys.group_running(full))
        *waiting, inbox, scheduled, wip, finished, running = pipe.execute()
    counts = {k.decode(): int(v) for k, v in running.items()}
    assert sum(counts.values()) == wip, (counts, wip)
    assert all(0 < n <= 2 for n in counts.values()), counts
    assert sum(waiting) + inbox + scheduled + wip + finished == total, (waiting, inbox, scheduled, wip, finished)


@pytest.mark.timeout(600)
def test_kill_loop_with_groups_loses_nothing_and_keeps_group_concurrency_and_counts_exact(jobs_env, start_worker):
    per_tenant, tenant_names = 40, [f"t{i}" for i in range(5)]
    for tenant in tenant_names:
        enqueue(tenant, per_tenant, key="test:gk", group_concurrency=2)
    for tenant in tenant_names:  # a second wave of slower jobs, so kills land mid-run
        Q.enqueue_many("group_mark", [{"key": "test:gk", "item": f"{tenant}-s{i}", "tenant": tenant, "seconds": 0.2}
                                      for i in range(30)], group_concurrency=2)
    total = len(tenant_names) * (per_tenant + 30)
    rng = random.Random(23)
    workers = [start_worker("email", "--concurrency", "2") for _ in range(2)]
    for _kill in range(12):
        time.sleep(rng.uniform(0.2, 0.8))
        snapshot_is_exact(get_redis(), tenant_names, total)
        victim = workers.pop(rng.randrange(len(workers)))
        victim.kill_hard()
        workers.append(start_worker("email", "--concurrency", "2"))
    client = get_redis()
    wait_until(lambda: client.scard("test:gk") == total, timeout=240, interval=0.5, message=f"all {total} items")
    wait_until(lambda: Q.get_stats()["total_results"] == total, timeout=60, interval=0.5, message="every job ended")
    wait_until(lambda: group_keys() == [], timeout=60, interval=0.5,
               message="the running counts to return to 0 and idle groups to leave")
    stats = Q.get_stats()
    assert stats["pending_jobs"] == 0 and stats["active_jobs"] == 0 and stats["failed_jobs"] == 0
    runs, worst = spans_within_limit_on(get_redis(), "test:gk")
    assert runs >= total and worst <= 2, (runs, worst)
    assert stats["abandoned_jobs"] > 0, "no kill landed on a running job: the loop did not exercise the sweep"


@pytest.mark.timeout(600)
def test_restart_loop_with_groups_redis_restarted_with_aof_loses_nothing_and_counts_stay_exact(
        monkeypatch, start_worker_factory):
    server = RedisServer(appendonly=True).start()
    try:
        point_this_process_at(server, monkeypatch)
        tenant_names = [f"r{i}" for i in range(4)]
        for tenant in tenant_names:
            Q.enqueue_many("group_mark", [{"key": "test:gr", "item": f"{tenant}-{i}", "tenant": tenant, "seconds": 0.1}
                                          for i in range(60)], group_concurrency=2)
        total = 240
        start_worker_factory(server.url, "email", "--concurrency", "2")
        start_worker_factory(server.url, "email", "--worker-class", "threaded", "--concurrency", "4")
        wait_until(lambda: server.client().scard("test:gr") >= 10, timeout=60)
        assert server.client().scard("test:gr") < total, "the work ended before the restarts began"
        for _restart in range(6):
            server.restart()
            time.sleep(0.8)
            wait_until(lambda: _snapshot_ok(server, tenant_names, total), timeout=10, interval=0.2,
                       message="an exact snapshot after the restart")
        client = server.client()
        wait_until(lambda: client.scard("test:gr") == total, timeout=240, interval=0.5, message=f"all {total} items")
        wait_until(lambda: group_keys(client) == [], timeout=120, interval=0.5,
                   message="running counts back to 0, idle groups gone")
        runs, worst = spans_within_limit_on(client, "test:gr")
        assert runs >= total and worst <= 2, (runs, worst)
    finally:
        server.cleanup()


def _snapshot_ok(server, tenant_names: list[str], total: int) -> bool:
    try:
        snapshot_is_exact(server.client(), tenant_names, total)
    except (redis.ConnectionError, redis.BusyLoadingError):  # the server may still be loading its AOF
        return False
    return True


def spans_within_limit_on(client, key: str) -> tuple[int, int]:
    """(runs recorded under ``key``, the most runs of one tenant that overlapped in time)."""
    by_tenant: dict[str, list[tuple[float, int]]] = {}
    raw = client.lrange(f"{key}:spans", 0, -1)
    for entry in raw:
        tenant, start, end = entry.decode().split("|")
        by_tenant.setdefault(tenant, []).extend([(float(start), 1), (float(end), -1)])
    worst = 0
    for points in by_tenant.values():
        running = 0
        for _at, step in sorted(points, key=lambda p: (p[0], p[1])):
            running += step
            worst = max(worst, running)
    return len(raw), worst


def test_domain_tasks_declare_their_user_as_the_group(jobs_env):
    from core.api.queues import ai_queue, crm_queue

    thread = ai_queue.enqueue_job("process_thread_ai", {"user_id": "u1", "thread_id": "t1"}, user_id="u1")
    sync = Q.enqueue_job("process_gmail_sync", {"job_id": 1, "user_id": "u2"}, user_id="u2")
    digest = Q.enqueue_job("send_user_digest", {"user_id": "u3"}, user_id="u3")
    contact = crm_queue.enqueue_job("upsert_contact", {"external_id": "c1", "email": "a@b.c"}, user_id="u4")
    system = crm_queue.enqueue_job("upsert_lead", {"external_id": "l1", "email": "a@b.c"})  # no user: ungrouped
    groups_of = {job_id: get_redis().hget(keys.job(job_id), "fk_group") for job_id in
                 (thread, sync, digest, contact, system)}
    assert groups_of == {thread: b"u1", sync: b"u2", digest: b"u3", contact: b"u4", system: None}
    assert get_redis().lrange(keys.queue(crm_queue.name), 0, -1) == [system.encode()]  # RQ's list, as before
    with pytest.raises(InvalidPayloadError, match="group '\\{user_id\\}' needs payload field 'user_id'"):
        crm_queue.enqueue_job("upsert_lead", {"external_id": "l2", "email": "a@b.c"}, group="{user_id}")


def test_cancel_racing_the_claim_200_times_on_grouped_jobs_either_wins_or_is_refused(jobs_env, start_worker):
    from core.errors import InvalidJobStateError

    start_worker("email", "--worker-class", "simple")
    wait_until(lambda: Q.get_stats()["workers"] == 1, timeout=20)
    rng = random.Random(5)
    canceled, refused = [], []
    for i in range(200):
        job_id = Q.enqueue_job("record_run", {"key": "test:grace", "value": f"r{i}"}, group=f"g{i % 3}")
        time.sleep(rng.uniform(0, 0.002))
        try:
            cancel_job(job_id)
            canceled.append(job_id)
        except InvalidJobStateError:
            refused.append(job_id)
    wait_until(lambda: all(get_job(j).status == JobStatus.COMPLETED for j in refused), timeout=60)
    ran = {v.decode() for v in get_redis().lrange("test:grace", 0, -1)}
    assert not ran & {get_job(j).payload["value"] for j in canceled}  # a canceled job never ran
    assert len(ran) == len(refused) and canceled and refused, (len(canceled), len(refused))
    wait_until(lambda: group_keys() == [], timeout=20, message="no stale id left in a group list or rotation")


def test_rq_reads_grouped_jobs_and_counts_the_ungrouped_list_as_before(jobs_env):
    from rq import Queue
    from rq.job import Job as RQJob
    from rq.serializers import JSONSerializer

    grouped = enqueue("a", 2)
    plain = Q.enqueue_job("add", {"a": 1, "b": 2})
    rq_queue = Queue(Q.name, connection=get_redis(), serializer=JSONSerializer)
    assert rq_queue.job_ids == [plain]  # RQ's list holds the ungrouped job only, as before
    fetched = RQJob.fetch(grouped[0], connection=get_redis(), serializer=JSONSerializer)
    assert fetched.get_status() == "queued" and fetched.origin == Q.name
    assert Q.get_stats()["pending_jobs"] == 3  # ours count both


def test_many_groups_at_their_limit_never_hide_a_group_behind_them(jobs_env):
    for i in range(70):
        enqueue(f"g{i:02d}", 2, group_concurrency=1)
    assert len(claim(100)) == 70  # one of each: every group is now at its limit with one job waiting
    enqueue("zz", 1)  # joins at the front score, behind 70 held groups in name order
    assert tenants(claim(10)) == ["zz"]
    Q.pause_group("zz")
    enqueue("zz", 1)
    assert claim(10) == []  # nothing else may run: held groups are skipped, never claimed


def test_rate_and_concurrency_limits_can_key_on_the_group(jobs_env):
    job_id = Q.enqueue_job("add", {"a": 1, "b": 2}, group="acct-42", rate_limit="10/m", rate_key="api:{group}")
    assert b"api:acct-42" in get_redis().hget(keys.job(job_id), "fk_limits")
    with pytest.raises(InvalidPayloadError, match="needs payload field 'group'"):
        Q.enqueue_job("add", {"a": 1, "b": 2}, rate_limit="10/m", rate_key="api:{group}")  # no group to fill it
