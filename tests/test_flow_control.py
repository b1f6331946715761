"""Flow control with real Redis and real worker processes: rate limits, concurrency limits,
Retry-After deferrals, paused queues, stopping a running job, three priorities."""

from __future__ import annotations

import http.server
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from core.api.jobs import get_job, stop_job
from core.api.queues import ai_queue, email_queue
from core.platform import keys
from core.platform.connection import get_redis
from core.queue.job_model import JobStatus
from tests.conftest import finished
from tests.servers import tkey, wait_until

pytestmark = pytest.mark.cluster_too  # on standalone Redis and in cluster mode (tests/conftest.py)


def _times(key: str) -> list[float]:
    return sorted(float(t) for t in get_redis().lrange(key, 0, -1))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (from /proc)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
    return ticks / 100.0


# --- rate limits ---------------------------------------------------------------------------------
def test_rate_limit_holds_120_per_minute_across_4_workers_in_2_processes_without_spinning(start_worker):
    """300 jobs under rate_limit="120/m": completions are spaced so that the run takes the time the
    limit dictates (299 intervals of 0.5 s) within 5%, no 60 s window holds more than 120 (+1 for
    the boundary), other tasks on the same queue run at once, and waiting workers use almost no CPU."""
    workers = [start_worker("ai", "--worker-class", "threaded", "--concurrency", "2") for _ in range(2)]
    ids = ai_queue.enqueue_many("rate_mark", [{"key": tkey("rate")} for _ in range(300)])
    wait_until(lambda: get_redis().llen(tkey("rate")) >= 1, timeout=20)
    cpu_start = sum(_cpu_seconds(w.pid) for w in workers)
    wall_start = time.monotonic()

    # a job parked on the limit shows as delayed with its reason; others on the queue are not held up
    parked = wait_until(lambda: next((j for j in map(get_job, ids[200:210]) if j.reason), None), timeout=10)
    assert parked.status == JobStatus.DELAYED
    assert parked.reason == "rate limited: ai provider 120/min"
    enqueued_at = time.time()
    echo = ai_queue.enqueue_job("ai_echo", {"text": "not held up"})
    assert finished(echo, timeout=5).status == JobStatus.COMPLETED
    assert get_job(echo).completed_at - enqueued_at < 1.0
    assert ai_queue.get_stats()["limited_jobs"] > 250

    wait_until(lambda: get_redis().llen(tkey("rate")) >= 300, timeout=240, interval=0.5)
    cpu = sum(_cpu_seconds(w.pid) for w in workers) - cpu_start
    wall = time.monotonic() - wall_start
    times = _times(tkey("rate"))
    span = times[-1] - times[0]
    assert 299 * 0.5 * 0.95 <= span <= 299 * 0.5 * 1.05, span
    for i, start in enumerate(times):  # any 60 s window
        in_window = sum(1 for t in times[i:] if t < start + 60)
        assert in_window <= 121, (start, in_window)
    # four waiting worker threads, two processes: a spinning claimer would burn a core
    assert cpu / wall < 0.15, f"workers used {cpu:.1f}s of CPU in {wall:.0f}s"
    assert all(get_job(i).status == JobStatus.COMPLETED for i in ids)
    assert get_job(ids[-1]).reason is None


def test_per_user_rate_keys_give_each_user_their_own_quota(start_worker):
    """rate_key="user:{user}" at 4/s: two users' jobs run side by side, each spaced 0.25 s."""
    start_worker("ai", "--worker-class", "threaded", "--concurrency", "4")
    payloads = [{"key": tkey("user"), "user": user} for _ in range(8) for user in ("ann", "bob")]
    ids = ai_queue.enqueue_many("per_user_mark", payloads)
    for job_id in ids:
        assert finished(job_id, timeout=20).status == JobStatus.COMPLETED
    ann, bob = _times(tkey("user:ann")), _times(tkey("user:bob"))
    for times in (ann, bob):
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert min(gaps) >= 0.25 - 0.01, gaps
        assert times[-1] - times[0] < 7 * 0.25 * 1.3  # not held back by the other user
    # the two users overlap in time: one's quota did not wait for the other's
    assert abs(ann[0] - bob[0]) < 0.25 and abs(ann[-1] - bob[-1]) < 0.5


def test_bad_limit_options_are_clear_errors_naming_what_is_accepted(jobs_env):
    from core.errors import InvalidPayloadError

    with pytest.raises(InvalidPayloadError, match=r"rate_limit '60 per minute' is not a rate; accepted"):
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, rate_limit="60 per minute")
    with pytest.raises(InvalidPayloadError, match=r"needs payload field 'user'"):
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, rate_limit="1/s", rate_key="u:{user}")
    with pytest.raises(InvalidPayloadError, match=r"concurrency must be a whole number from 1"):
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, concurrency=0)
    with pytest.raises(InvalidPayloadError, match=r"unknown priority 'urgent'; accepted: high, normal, low"):
        email_queue.enqueue_job("add", {"a": 1, "b": 2}, priority="urgent")
    with pytest.raises(ValueError, match=r"task 'bad': rate_limit"):
        email_queue.register_task("bad", lambda: None, rate_limit="fast")


# --- concurrency limits ----------------------------------------------------------------------------
def test_concurrency_limit_of_one_never_has_two_running(start_worker):
    for _ in range(2):
        start_worker("email", "--worker-class", "threaded", "--concurrency", "4")
    ids = email_queue.enqueue_many("exclusive", [{"key": tkey("ex"), "user": "u1", "seconds": 0.2}] * 10)
    email_queue.enqueue_many("exclusive", [{"key": tkey("other"), "user": "u2", "seconds": 0.2}] * 3)
    for job_id in ids:
        assert finished(job_id, timeout=30).status == JobStatus.COMPLETED
    seen = [int(v) for v in get_redis().lrange(tkey("ex:max"), 0, -1)]
    assert len(seen) == 10 and max(seen) == 1, seen
    # another user's key is not held by the first one's permit: u2's three jobs all start while
    # u1's ten (one at a time, 0.2 s each) are still going
    starts = sorted(float(v.split()[1]) for v in get_redis().lrange(tkey("other:started"), 0, -1))
    u1_starts = sorted(float(v.split()[1]) for v in get_redis().lrange(tkey("ex:started"), 0, -1))
    assert len(starts) == 3 and starts[-1] < u1_starts[-1] - 0.5, (starts, u1_starts)


def test_a_sigkilled_holders_permit_frees_within_its_lease(start_worker):
    """The permit is a lease: after kill -9 of the worker holding it, the next job waiting for it
    starts within the lease (heartbeat 1 s + grace 2 s here) plus one release interval."""
    holder = start_worker("email", "--worker-class", "fork")
    email_queue.enqueue_job("exclusive", {"key": tkey("k"), "user": "u9", "seconds": 60})
    wait_until(lambda: get_redis().llen(tkey("k:started")) == 1, timeout=15)
    second = email_queue.enqueue_job("exclusive", {"key": tkey("k"), "user": "u9", "seconds": 0})
    start_worker("email", "--worker-class", "threaded", "--concurrency", "2")  # free slots, no permit
    waiting = wait_until(lambda: (j := get_job(second)) and j.reason and j, timeout=10)
    assert waiting.status == JobStatus.DELAYED and "concurrency limited: sync:u9" in waiting.reason
    time.sleep(1.0)
    assert get_redis().llen(tkey("k:started")) == 1  # the live holder keeps its permit
    killed_at = time.time()
    holder.kill_hard()
    wait_until(lambda: get_redis().llen(tkey("k:started")) >= 2, timeout=15)
    # the next start under the permit: the waiting job, or the killed one's retry, whichever the
    # freed permit went to first
    next_start = sorted(float(v.split()[1]) for v in get_redis().lrange(tkey("k:started"), 0, -1))[1]
    assert next_start - killed_at < 3.0 + 1.5, next_start - killed_at
    assert finished(second, timeout=70).status == JobStatus.COMPLETED


# --- Retry-After -------------------------------------------------------------------------------------
@pytest.fixture
def busy_peer() -> Iterator[str]:
    """A loopback HTTP peer: the first request gets 429 with Retry-After: 2, later ones 200."""
    calls = {"n": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            calls["n"] += 1
            if calls["n"] == 1:
                self.send_response(429)
                self.send_header("Retry-After", "2")
            else:
                self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/quota"
    server.shutdown()
    server.server_close()


def test_retry_after_reruns_after_the_delay_and_the_worker_serves_others_meanwhile(start_worker, busy_peer):
    start_worker("email", "--worker-class", "simple")  # one slot: a sleeping job would block the rest
    job_id = email_queue.enqueue_job("call_peer", {"url": busy_peer, "key": tkey("peer")})
    deferred = wait_until(lambda: (j := get_job(job_id)) and j.status == JobStatus.DELAYED and j, timeout=10)
    assert deferred.reason.startswith("retry after 2s: GET ") and "429" in deferred.reason
    others = [email_queue.enqueue_job("add", {"a": i, "b": 1}) for i in range(5)]
    for other in others:
        assert finished(other, timeout=1.8).status == JobStatus.COMPLETED
    first_attempt = _times(tkey("peer:attempts"))[0]
    assert all(get_job(o).completed_at < first_attempt + 2 for o in others)
    job = finished(job_id, timeout=10)
    attempts = _times(tkey("peer:attempts"))
    assert job.status == JobStatus.COMPLETED and job.result == 200
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 2.0
    assert job.retry_count == 0 and job.deferrals == 1  # a deferral, not a failed attempt
    assert email_queue.get_stats()["deferred_jobs"] == 1


def test_a_429_with_retry_after_defers_also_when_it_is_the_last_http_attempt(jobs_env, busy_peer, setting):
    """One attempt allowed (JOBS_HTTP_MAX_ATTEMPTS=1): the peer's 429 with Retry-After still asks
    the job to run later, instead of failing it as an exhausted upstream."""
    import requests

    from core.errors import RetryAfter
    from core.platform.http import request_with_backoff

    setting("JOBS_HTTP_MAX_ATTEMPTS", "1")
    with pytest.raises(RetryAfter) as asked:
        request_with_backoff(requests.Session(), "GET", busy_peer)
    assert asked.value.seconds == 2.0 and "answered 429 with Retry-After: 2" in asked.value.reason
    assert request_with_backoff(requests.Session(), "GET", busy_peer).status_code == 200  # the peer's next answer


def test_deferrals_are_bounded_and_the_job_fails_saying_so(start_worker, tmp_path):
    start_worker("email", "--worker-class", "simple", env={"JOBS_MAX_DEFERRALS": "2"})
    notes = tmp_path / "notes.txt"
    job_id = email_queue.enqueue_job("defer_noted", {"path": str(notes), "seconds": 0.1, "times": 10}, max_retries=3)
    job = finished(job_id, timeout=15)
    assert job.status == JobStatus.FAILED and job.deferrals == 2 and job.retry_count == 0
    assert "(deferred 2 times by Retry-After, the most allowed: JOBS_MAX_DEFERRALS=2)" in job.error
    assert len(notes.read_text().splitlines()) == 3  # past the bound it fails at once: it uses no retry


# --- pause and resume ----------------------------------------------------------------------------------
def test_pause_mid_batch_then_resume_and_the_pause_survives_a_worker_restart(start_worker):
    worker = start_worker("email", "--worker-class", "threaded", "--concurrency", "2")
    ids = email_queue.enqueue_many("mark_done", [{"key": tkey("p"), "item": str(i), "seconds": 0.05}
                                                 for i in range(60)])
    wait_until(lambda: get_redis().scard(tkey("p")) >= 10, timeout=15)
    assert email_queue.pause() is True
    time.sleep(0.3)  # jobs already running finish
    done = get_redis().scard(tkey("p"))
    time.sleep(1.5)
    assert get_redis().scard(tkey("p")) == done < 60
    stats = email_queue.get_stats()
    assert stats["paused"] is True and stats["pending_jobs"] == 60 - done

    worker.stop()
    start_worker("email", "--worker-class", "simple")
    time.sleep(1.5)
    assert get_redis().scard(tkey("p")) == done and email_queue.paused

    assert email_queue.resume() is True
    for job_id in ids:
        assert finished(job_id, timeout=20).status == JobStatus.COMPLETED
    assert get_redis().scard(tkey("p")) == 60 and email_queue.get_stats()["paused"] is False


def test_three_priorities_are_claimed_high_then_normal_then_low(start_worker):
    email_queue.pause()
    order = [("low", "l1"), ("normal", "n1"), ("high", "h1"), ("low", "l2"), ("high", "h2"), ("normal", "n2")]
    ids = [email_queue.enqueue_job("record_run", {"key": tkey("order"), "value": v}, priority=p) for p, v in order]
    start_worker("email", "--worker-class", "simple")
    email_queue.resume()
    for job_id in ids:
        finished(job_id, timeout=15)
    assert [v.decode() for v in get_redis().lrange(tkey("order"), 0, -1)] == ["h1", "h2", "n1", "n2", "l1", "l2"]


# --- stopping a running job ------------------------------------------------------------------------------
@pytest.mark.parametrize(("worker_class", "cooperative"), [
    ("prefork", False), ("fork", False), ("simple", True), ("simple", False), ("threaded", True), ("threaded", False),
])
def test_stop_a_running_job_in_each_worker_class(start_worker, monkeypatch, worker_class, cooperative):
    """The job ends canceled with "stopped by <who>" and is not retried (it has retries left)."""
    start_worker("email", "--worker-class", worker_class, env={"JOBS_STOP_GRACE": "1"})
    job_id = email_queue.enqueue_job("stoppable", {"key": tkey("s"), "cooperative": cooperative, "seconds": 30})
    wait_until(lambda: get_redis().get(tkey("s:runs")) == b"1", timeout=15)
    stopping = stop_job(job_id, by="tester")
    assert stopping.status == JobStatus.RUNNING and stopping.reason == "stopping: stopped by tester"
    asked = time.monotonic()
    job = finished(job_id, timeout=10)
    assert job.status == JobStatus.CANCELED and job.error == "stopped by tester"
    # seen at the next heartbeat (1 s); a task that ignores the flag is ended after the grace (1 s)
    assert time.monotonic() - asked < 4.0
    assert bool(get_redis().get(tkey("s:noticed"))) == (cooperative and worker_class in ("simple", "threaded"))
    time.sleep(1.5)
    assert get_redis().get(tkey("s:runs")) == b"1" and get_job(job_id).status == JobStatus.CANCELED
    assert not get_redis().get(tkey("s:ran_out"))
    # the worker serves the next job
    assert finished(email_queue.enqueue_job("add", {"a": 1, "b": 1}), timeout=10).result == 2


def test_stop_of_a_pending_job_cancels_it_and_of_an_ended_job_is_a_conflict(jobs_env):
    from core.errors import InvalidJobStateError

    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 2})
    job = stop_job(job_id, by="ops")
    assert job.status == JobStatus.CANCELED and job.error == "stopped by ops"
    assert get_redis().llen(keys.queue(email_queue.name)) == 0
    with pytest.raises(InvalidJobStateError, match="is canceled; only running, pending or delayed jobs can be stopped"):
        stop_job(job_id)


def test_a_stopped_job_whose_worker_died_ends_canceled_not_retried(start_worker):
    """The stop mark is in Redis: if the worker dies before acting on it, the sweep cancels the job."""
    worker = start_worker("email", "--worker-class", "fork", env={"JOBS_WORKER_HEARTBEAT_INTERVAL": "5"})
    job_id = email_queue.enqueue_job("stoppable", {"key": tkey("d"), "cooperative": False, "seconds": 30})
    wait_until(lambda: get_redis().get(tkey("d:runs")) == b"1", timeout=15)
    stop_job(job_id, by="tester")
    worker.signal(signal.SIGKILL)
    worker.kill_hard()
    start_worker("email", "--worker-class", "simple")
    job = finished(job_id, timeout=60)
    assert job.status == JobStatus.CANCELED and job.error == "stopped by tester"
    assert get_redis().get(tkey("d:runs")) == b"1"


# --- HTTP, CLI, queue-wide limits, the Gmail sync permit ------------------------------------------------
def test_pause_resume_and_stop_over_http_and_the_admin_health(client, start_worker):
    from core.platform.auth import issue_user_token
    from tests.conftest import ADMIN_TOKEN

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    alice = {"Authorization": f"Bearer {issue_user_token('alice')}"}
    bob = {"Authorization": f"Bearer {issue_user_token('bob')}"}
    assert client.post("/api/jobs/queue/email/pause", headers=alice).status_code == 403
    paused = client.post("/api/jobs/queue/email/pause", headers=admin)
    assert paused.status_code == 200 and paused.get_json()["data"] == {"queue": "email", "paused": True, "changed": True}
    assert client.get("/api/jobs/health", headers=admin).get_json()["data"]["paused_queues"] == ["email"]
    assert client.get("/api/jobs/queue/email/stats", headers=admin).get_json()["data"]["stats"]["paused"] is True
    unknown = client.post("/api/jobs/queue/nope/pause", headers=admin)
    assert unknown.status_code == 404 and "unknown queue 'nope'; accepted: email" in unknown.get_json()["error"]["message"]
    waiting = email_queue.enqueue_job("add", {"a": 1, "b": 2}, user_id="alice")
    assert client.post(f"/api/jobs/{waiting}/stop", headers=bob).status_code == 404
    stopped = client.post(f"/api/jobs/{waiting}/stop", headers=alice)
    assert stopped.status_code == 200 and stopped.get_json()["data"]["status"] == "canceled"
    assert stopped.get_json()["data"]["error"] == "stopped by user:alice"
    assert client.post(f"/api/jobs/{waiting}/stop", headers=alice).status_code == 409
    assert client.post("/api/jobs/queue/email/resume", headers=admin).get_json()["data"]["paused"] is False

    start_worker("email", "--worker-class", "threaded", "--concurrency", "2", env={"JOBS_STOP_GRACE": "1"})
    running = email_queue.enqueue_job("stoppable", {"key": tkey("h"), "seconds": 30}, user_id="alice")
    wait_until(lambda: get_redis().get(tkey("h:runs")) == b"1", timeout=10)
    answer = client.post(f"/api/jobs/{running}/stop", headers=alice)
    assert answer.status_code == 202 and answer.get_json()["data"]["reason"] == "stopping: stopped by user:alice"
    assert finished(running, timeout=10).status == JobStatus.CANCELED


def test_cli_pause_resume_and_stop(jobs_env):
    import subprocess
    import sys

    from tests.servers import ROOT, worker_env

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "scripts.jobs", *args], cwd=ROOT, env=worker_env(jobs_env.url),
                              capture_output=True, text=True)

    assert cli("queue", "pause", "crm").stdout.strip() == "crm paused"
    assert cli("queue", "pause", "crm").stdout.strip() == "crm paused (it already was)"
    assert "yes" in cli("stats", "crm").stdout
    assert cli("queue", "resume", "crm").stdout.strip() == "crm resumed"
    bad = cli("queue", "pause", "sms")
    assert bad.returncode == 2 and "unknown queue 'sms'; accepted: email" in bad.stderr
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 1}, delay=60)
    assert cli("stop", job_id).stdout.strip() == f"{job_id} canceled"
    assert get_job(job_id).error.startswith("stopped by ")


def test_a_queue_wide_rate_limit_from_the_environment(start_worker):
    start_worker("crm", "--worker-class", "threaded", "--concurrency", "4", env={"JOBS_RATE_LIMIT_CRM": "4/s"})
    from core.api.queues import crm_queue

    ids = crm_queue.enqueue_many("crm_echo", [{"text": str(i)} for i in range(6)])
    jobs = [finished(i, timeout=15) for i in ids]
    starts = sorted(j.started_at for j in jobs)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert min(gaps) >= 0.25 - 0.02, gaps


def test_the_gmail_sync_task_holds_one_permit_per_user(domain_env):
    from email_automation.gmail_sync_jobs import GmailSyncJobManager

    job_id = GmailSyncJobManager().queue_sync_job("u-42")
    limits = get_redis().hget(keys.job(job_id), "fk_limits").decode()
    assert '"n":"conc:gmail-sync:u-42","c":1' in limits


def test_a_prefetched_job_stopped_before_it_started_never_runs(start_worker, redis_mode):
    """A worker whose claims come back full claims ahead (adaptive prefetch): a job claimed ahead
    behind a slow one shows pending (RQ's tools: started, in RQ's started registry), and one stopped
    while it waits there is not started at all."""
    from rq.job import Job as RQJob

    # a budget far above these jobs' durations: the claim after the quick job's takes two, whatever
    # the first job's cost on this machine (the default 5 ms bound is tested in test_worker_prefetch.py)
    start_worker("email", "--worker-class", "simple", "--prefetch", "2",
                 env={"JOBS_WORKER_PREFETCH_BUDGET_MS": "60000"})
    email_queue.pause()
    quick = email_queue.enqueue_job("stoppable", {"key": tkey("pf0"), "seconds": 0})
    slow = email_queue.enqueue_job("stoppable", {"key": tkey("pf1"), "cooperative": False, "seconds": 2})
    waiting = email_queue.enqueue_job("stoppable", {"key": tkey("pf2"), "seconds": 2})
    email_queue.resume()
    # the quick job's claim came back full and its duration is known: the next claim takes two
    wait_until(lambda: get_redis().get(tkey("pf1:runs")) == b"1", timeout=10)
    assert finished(quick, timeout=10).status == JobStatus.COMPLETED
    held = get_job(waiting)
    assert held.status == JobStatus.PENDING and held.reason.startswith("claimed by "), held
    assert held.started_at is None
    if redis_mode == "standalone":  # RQ's own Job class has no cluster support (README: Redis Cluster)
        assert RQJob.fetch(waiting, connection=get_redis()).get_status(refresh=True) == "started"
    stop_job(waiting, by="ops")
    assert finished(slow, timeout=10).status == JobStatus.COMPLETED
    job = finished(waiting, timeout=10)
    assert job.status == JobStatus.CANCELED and job.error == "stopped by ops"
    assert get_redis().get(tkey("pf2:runs")) is None


def test_a_calls_rate_overrides_the_tasks_and_keeps_its_key(jobs_env):
    import json

    from core.api.queues import ai_queue
    from core.errors import InvalidPayloadError

    job_id = ai_queue.enqueue_job("rate_mark", {"key": tkey("o")}, rate_limit="30/m")
    limits = json.loads(get_redis().hget(keys.job(job_id), "fk_limits"))
    assert limits == [{"n": "rate:provider", "c": 30, "p": 60.0, "b": 1, "l": "rate limited: ai provider 30/min"}]
    other = ai_queue.enqueue_job("rate_mark", {"key": tkey("o")}, rate_limit="2/s", rate_key="alt")
    assert json.loads(get_redis().hget(keys.job(other), "fk_limits"))[0]["n"] == "rate:alt"
    assert get_redis().hget(keys.job(ai_queue.enqueue_job("ai_echo", {"text": "x"})), "fk_limits") is None
    # only the key: the task's rate on another budget (a second provider account, say)
    moved = ai_queue.enqueue_job("rate_mark", {"key": tkey("o")}, rate_key="account-2")
    assert json.loads(get_redis().hget(keys.job(moved), "fk_limits")) == [
        {"n": "rate:account-2", "c": 120, "p": 60.0, "b": 1, "l": "rate limited: ai account-2 120/min"}]
    with pytest.raises(InvalidPayloadError, match=r"rate_key needs rate_limit .*; the task declares none"):
        ai_queue.enqueue_job("ai_echo", {"text": "x"}, rate_key="account-2")
