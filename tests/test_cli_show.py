"""Readable with redis-cli (issue 19, item 7): a job's call is plain JSON in its hash up to
``COMPRESS_OVER`` bytes, ``fikiri-jobs show <id>`` prints any job decoded, and every ``redis-cli``
line of the README's "Redis keys" section works against a real redis-server holding real jobs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zlib

from rq.job import Job as RQJob
from rq.serializers import JSONSerializer

from core.api.jobs import get_job
from core.api.queues import crm_queue, email_queue
from core.platform import keys
from core.queue.rq_compat import COMPRESS_OVER
from tests.servers import ROOT, wait_until, worker_env

ONE_KIB = 1024  # the README's "plain JSON up to 1 KiB"


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.jobs", *args], cwd=ROOT, env=worker_env(redis_url),
                          capture_output=True, text=True, timeout=60)


def _data(client, job_id: str) -> bytes:
    return client.hget(keys.job(job_id), "data")


def _text_of_json_size(size: int) -> str:
    """crm_echo's ``text`` whose job data JSON is exactly ``size`` bytes."""
    empty = len(json.dumps(["crm_echo", None, [], {"text": ""}], separators=(",", ":")))
    return "y" * (size - empty)


def test_a_small_call_is_plain_json_and_a_large_one_is_compressed(jobs_env):
    client = jobs_env.client()
    small = email_queue.enqueue_job("add", {"a": 1, "b": 2})
    raw = _data(client, small)
    assert raw == b'["add",null,[],{"a":1,"b":2}]'
    assert json.loads(raw) == ["add", None, [], {"a": 1, "b": 2}]

    # up to 1 KiB: JSON, even when zlib would shrink it (a very repetitive call)
    assert COMPRESS_OVER == ONE_KIB
    at_limit = {"text": _text_of_json_size(ONE_KIB)}
    at_id = crm_queue.enqueue_job("crm_echo", at_limit)
    assert len(_data(client, at_id)) == ONE_KIB
    assert json.loads(_data(client, at_id)) == ["crm_echo", None, [], at_limit]
    # one byte over: compressed (zlib shrinks it)
    over = {"text": _text_of_json_size(ONE_KIB + 1)}
    over_id = crm_queue.enqueue_job("crm_echo", over)
    packed = _data(client, over_id)
    assert packed[:1] != b"[" and len(packed) < ONE_KIB
    assert json.loads(zlib.decompress(packed)) == ["crm_echo", None, [], over]
    big = {"text": " ".join(f"line {i} of a long email body" for i in range(200))}
    big_id = crm_queue.enqueue_job("crm_echo", big)
    assert _data(client, big_id)[:1] != b"["

    # RQ's own Job API and ours read both forms
    for job_id, task, payload in [(small, "add", {"a": 1, "b": 2}), (at_id, "crm_echo", at_limit),
                                  (over_id, "crm_echo", over), (big_id, "crm_echo", big)]:
        rq_job = RQJob.fetch(job_id, connection=client, serializer=JSONSerializer)
        assert (rq_job.func_name, list(rq_job.args), rq_job.kwargs) == (task, [], payload)
        ours = get_job(job_id)
        assert (ours.task_name, ours.payload) == (task, payload)


def test_show_prints_jobs_decoded_with_their_events(jobs_env, start_worker):
    done = email_queue.enqueue_job("add", {"a": 2, "b": 5}, user_id="u7")
    failed = email_queue.enqueue_job("always_fail", {"message": "boom-42"})
    worker = start_worker("email")
    wait_until(lambda: get_job(done).status.value == "completed" and get_job(failed).status.value == "failed",
               timeout=30)
    worker.stop()
    big = {"text": " ".join(f"line {i} of a long email body" for i in range(200))}
    pending = crm_queue.enqueue_job("crm_echo", big)  # no crm worker: stays pending, stored compressed

    shown = json.loads(cli(jobs_env.url, "--json", "show", done).stdout)
    assert shown["job"]["status"] == "completed" and shown["job"]["result"] == 7
    assert shown["job"]["payload"] == {"a": 2, "b": 5} and shown["job"]["user_id"] == "u7"
    assert [e["event"] for e in shown["events"]] == ["enqueued", "started", "completed"]
    assert all(e["job_id"] == done for e in shown["events"])
    assert shown["redis"]["key"] == f"rq:job:{done}" and shown["redis"]["data_encoding"] == "json"
    assert shown["redis"]["fields"]["data"] == ["add", None, [], {"a": 2, "b": 5}]
    assert shown["redis"]["fields"]["status"] == "finished" and shown["redis"]["ttl"] > 0

    text = cli(jobs_env.url, "show", done)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert re.search(r"^status\s+completed$", out, re.M)
    assert re.search(r"^payload:\n  \{\n    \"a\": 2,\n    \"b\": 5\n  \}$", out, re.M)
    assert re.search(r"^result:\n  7$", out, re.M)
    assert re.search(r"^error:\s+-$", out, re.M)
    assert f"HGETALL rq:job:{done}" in out and "plain JSON" in out
    lines = [line.split()[2] for line in out.split("events (3, this run):\n")[1].splitlines()]
    assert lines == ["enqueued", "started", "completed"]

    bad = cli(jobs_env.url, "show", failed)
    assert bad.returncode == 0, bad.stderr
    assert re.search(r"^status\s+failed$", bad.stdout, re.M)
    error_block = bad.stdout.split("\nerror:\n", 1)[1]
    assert "ValueError: boom-42" in error_block.split("\nredis:", 1)[0]
    bad_json = json.loads(cli(jobs_env.url, "--json", "show", failed).stdout)
    assert [e["event"] for e in bad_json["events"]][-1] == "failed"
    assert "boom-42" in bad_json["events"][-1]["error"]

    waiting = json.loads(cli(jobs_env.url, "--json", "show", pending).stdout)
    assert waiting["redis"]["data_encoding"] == "zlib"
    assert waiting["redis"]["fields"]["data"] == ["crm_echo", None, [], big]
    assert waiting["job"]["payload"] == big and waiting["job"]["status"] == "pending"
    assert [e["event"] for e in waiting["events"]] == ["enqueued"]
    assert "line 199 of a long email body" in cli(jobs_env.url, "show", pending).stdout


def test_show_reads_a_jobs_events_from_its_creation_not_the_whole_stream(jobs_env):
    """Events written before the job was created are not read (a bounded replay, not a scan)."""
    client = jobs_env.client()
    for i in range(2000):  # an old, busy stream: entries long before the job
        client.xadd(keys.events(), {"job": "other", "event": "enqueued", "queue": "email", "task": "add"},
                    id=f"{1000 + i}-0")
    job_id = email_queue.enqueue_job("add", {"a": 1, "b": 1})
    before = client.info("commandstats").get("cmdstat_xread", {}).get("calls", 0)
    shown = json.loads(cli(jobs_env.url, "--json", "show", job_id).stdout)
    assert [e["event"] for e in shown["events"]] == ["enqueued"]
    reads = client.info("commandstats").get("cmdstat_xread", {}).get("calls", 0) - before
    assert reads <= 2, f"{reads} XREADs: the replay read the stream's old entries"


def test_show_unknown_and_malformed_ids(jobs_env):
    missing = cli(jobs_env.url, "show", "no-such-job")
    assert missing.returncode == 1
    assert "Job no-such-job does not exist" in missing.stderr and missing.stdout == ""
    malformed = cli(jobs_env.url, "show", "not a job id!")
    assert malformed.returncode == 2 and "error:" in malformed.stderr


def test_flask_jobs_show(jobs_env):
    job_id = email_queue.enqueue_job("add", {"a": 3, "b": 4})
    flask = [sys.executable, "-m", "flask", "--app", "tests.host_app", "jobs"]
    shown = subprocess.run([*flask, "--json", "show", job_id], cwd=str(ROOT), env=worker_env(jobs_env.url),
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert json.loads(shown.stdout)["job"]["payload"] == {"a": 3, "b": 4}


def test_every_redis_cli_line_in_the_readme_works(jobs_env):
    """Run each command of the "Redis keys" block as a reader would paste it (``<id>`` replaced by
    a real job's id, ``-u`` pointing redis-cli at the test's redis-server), with a pending email job
    of user 42 and a failed crm job in place; and the section says how ``data`` is stored."""
    from tests.readme_blocks import bash, commands, readme_block, shell_env, substitute

    block = readme_block("Redis keys", "redis-cli HGETALL rq:job:<id>")
    pending = email_queue.enqueue_job("add", {"a": 1, "b": 2}, user_id="42")
    failed = crm_queue.enqueue_job("crm_echo", {"text": "hi"})
    crm_queue.fail_job(failed, "crm is down", retry=False)
    expected = {  # what each key's answer must contain
        f"rq:job:{pending}": '["add",null,[],{"a":1,"b":2}]', "rq:queue:fikiri:email": pending,
        "rq:failed:fikiri:crm": failed, "fikiri:user:42:jobs": pending, "fikiri:stats:email": "add:enqueued",
        "fikiri:events": pending,
    }
    code = substitute(block.code, {"<id>": pending, "redis-cli ": f"redis-cli -u {jobs_env.url} "})
    seen = set()
    for command in commands(code):
        answer = bash(command, shell_env(jobs_env.url), timeout=30)
        assert answer.returncode == 0 and not answer.stdout.startswith(("ERR", "WRONGTYPE")), (command, answer)
        key = next((k for k in expected if f" {k} " in f"{command.split('#', 1)[0]} "), None)
        assert key is not None, f"no check for {command!r}: add one to this test"
        assert expected[key] in answer.stdout, (command, answer.stdout)
        seen.add(key)
    assert seen == set(expected), f"README lines no longer cover {set(expected) - seen}"
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Redis keys\n"):]
    section = section[:section.find("\n## ", 1)]
    assert "fikiri-jobs show <id>" in section
    assert "1 KiB" in section and COMPRESS_OVER == ONE_KIB
