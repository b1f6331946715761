"""Task metrics recorded by real workers match exactly what happened; /metrics parses with
prometheus-client's parser; the admin endpoints answer; cleanup removes only what is expired."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from core.api.jobs import get_job
from core.api.queues import email_queue
from core.ops.maintenance import nightly_cleanup
from core.queue import task_metrics
from tests.conftest import ADMIN_TOKEN
from tests.servers import wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def run_mixed_batch(start_worker) -> list[str]:
    ids = [email_queue.enqueue_job("add", {"a": i, "b": 1}) for i in range(4)]
    ids.append(email_queue.enqueue_job("always_fail", {"message": "bad input"}))
    ids.append(email_queue.enqueue_job("fail_times", {"key": "test:m", "times": 1}, max_retries=1))
    start_worker("email")
    for job_id in ids:
        wait_until(lambda j=job_id: get_job(j).status.is_final, timeout=30)
    # timings and history are flushed when the worker goes idle (counts are written with each job)
    expected = {"add": 4, "always_fail": 1, "fail_times": 2}  # attempts, from every worker process
    wait_until(lambda: all(len(task_metrics.get_task_history(t, 10)) == n for t, n in expected.items()), timeout=10)
    return ids


def test_metrics_match_a_mixed_run(api_env, start_worker):
    run_mixed_batch(start_worker)
    stats = task_metrics.get_task_stats()
    assert stats["add"]["total"] == 4 and stats["add"]["succeeded"] == 4 and stats["add"]["failed"] == 0
    assert stats["always_fail"] == {**stats["always_fail"], "total": 1, "succeeded": 0, "failed": 1, "retried": 0,
                                    "last_status": "failed"}
    assert stats["fail_times"]["total"] == 2 and stats["fail_times"]["succeeded"] == 1
    # failed counts attempts that ended the job failed; the failed first attempt was retried
    assert stats["fail_times"]["failed"] == 0 and stats["fail_times"]["retried"] == 1
    history = task_metrics.get_task_history("add", 10)
    assert len(history) == 4 and all(h["status"] == "completed" for h in history)
    durations = [h["duration"] for h in history]
    assert abs(stats["add"]["avg_duration"] - sum(durations) / 4) < 1e-5
    assert stats["add"]["p95_duration"] == max(durations)
    failures = task_metrics.get_recent_failures(10, 1)
    assert {f["task"] for f in failures} == {"always_fail", "fail_times"}
    assert any("bad input" in f["error"] for f in failures)
    rate = task_metrics.processing_rate(5)
    assert sum(r["completed"] for r in rate) == 5 and sum(r["failed"] for r in rate) == 2
    assert task_metrics.clear_metrics("add") == 1
    cleared = task_metrics.get_task_stats()["add"]
    assert cleared["total_duration"] == 0 and task_metrics.get_task_history("add") == []
    assert cleared["succeeded"] == 4  # counts are the queue's lifetime counters, never cleared


def test_monitor_endpoints_and_prometheus(api_env, client, start_worker):
    run_mixed_batch(start_worker)
    body = client.get("/api/jobs/monitor/stats?task=add", headers=ADMIN).get_json()
    assert body["data"]["tasks"]["add"]["succeeded"] == 4
    history = client.get("/api/jobs/monitor/add/history?limit=2", headers=ADMIN).get_json()["data"]
    assert len(history["executions"]) == 2
    failures = client.get("/api/jobs/monitor/failures?limit=5&hours=1", headers=ADMIN).get_json()["data"]
    assert len(failures["failures"]) == 2
    assert client.get("/api/jobs/monitor/failures?hours=abc", headers=ADMIN).status_code == 400
    assert client.get("/metrics").status_code == 401
    text = client.get("/metrics", headers=ADMIN).get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    depth = {(s.labels["queue"], s.labels["state"]): s.value for s in families["fikiri_jobs_queue_jobs"].samples}
    assert depth[("email", "completed")] == 5 and depth[("email", "failed")] == 1
    runs = {(s.labels["task"], s.labels["outcome"]): s.value
            for s in families["fikiri_jobs_task_executions"].samples if s.name.endswith("_total")}
    assert runs[("add", "succeeded")] == 4 and runs[("always_fail", "failed")] == 1
    counts = [s.value for s in families["fikiri_jobs_task_duration_seconds"].samples
              if s.name.endswith("_count") and s.labels["task"] == "add"]
    assert counts == [4]
    assert [s.value for s in families["fikiri_jobs_fallback_mode"].samples] == [0]


def test_nightly_cleanup_removes_exactly_what_is_expired(jobs_env, start_worker, monkeypatch):
    keep = email_queue.enqueue_job("add", {"a": 1, "b": 1}, user_id="u1")
    expire = email_queue.enqueue_job("add", {"a": 2, "b": 2}, user_id="u1")
    start_worker("email", "--burst").wait(60)
    client = jobs_env.client()
    # Make one finished job look past its retention: its registry score is its expiry time.
    client.zadd("rq:finished:fikiri:email", {expire: time.time() - 10})
    client.delete(f"rq:job:{expire}")  # Redis already expired its hash
    report = nightly_cleanup()
    assert report["queues"]["email"]["registry_entries_removed"] == 1
    assert report["queues"]["ai"]["registry_entries_removed"] == 0
    assert report["user_index_ids_removed"] == 1
    assert [i.decode() for i in client.zrange("rq:finished:fikiri:email", 0, -1)] == [keep]
    assert [i.decode() for i in client.lrange("fikiri:user:u1:jobs", 0, -1)] == [keep]
    assert nightly_cleanup()["user_index_ids_removed"] == 0
