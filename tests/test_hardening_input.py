"""No 500 from bad input (issue 15), against gunicorn: the regressions found by hand (unicode digits
in limit/hours/page, 20,000-deep JSON, 5,000 levels inside user_id, malformed ids and unknown queues
on the dashboard), then a hypothesis fuzz of the dashboard and ops/monitor routes with unicode
digits, deep nesting, odd ids and huge values. Any 5xx fails, and so does a traceback in the log."""

from __future__ import annotations

import json
from urllib.parse import quote

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.platform.auth import issue_user_token
from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
UNICODE_DIGITS = ["²", "³", "١", "٣", "߂", "௫", "𝟗", "¹⁰", "Ⅻ", "½", "1²", "٠٠٧"]
HUGE = ["9" * 30, "9" * 3000, "-1", "1e9", "0x10", "+5", "5\u00a0", "18446744073709551617"]
NUMERIC_ROUTES = [
    ("/api/jobs/user/alice/recent", "limit"),
    ("/api/jobs/queue/email/failed", "limit"),
    ("/api/jobs/monitor/send_email/history", "limit"),
    ("/api/jobs/monitor/failures", "limit"),
    ("/api/jobs/monitor/failures", "hours"),
    ("/api/jobs/audit", "limit"),
]


def assert_clean_log(api_server) -> None:
    log = api_server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]


def test_numbers_are_ascii_digits_in_range(api_server):
    for value in UNICODE_DIGITS + HUGE:
        for path, name in NUMERIC_ROUTES:
            response = requests.get(api_server.url(path), params={name: value}, headers=ADMIN, timeout=10)
            assert response.status_code == 400, (path, name, value, response.status_code)
            error = response.json()["error"]
            assert error["code"] == "invalid_payload" and f"{name} must be a whole number" in error["message"]
    assert_clean_log(api_server)


def test_deep_json_is_400_not_recursion_error(api_server):
    user = {"Authorization": f"Bearer {issue_user_token('alice')}", "Content-Type": "application/json"}
    deep_array = "[" * 20_000 + "]" * 20_000  # 40 KB
    for path in ("/api/jobs/sync/trigger", "/api/jobs/ai/trigger"):
        response = requests.post(api_server.url(path), data=deep_array, headers=user, timeout=10)
        assert response.status_code == 400 and "deeper than 32 levels" in response.json()["error"]["message"]
    inside_user_id = '{"prompt": "hi", "user_id": ' + "[" * 5000 + "]" * 5000 + "}"
    response = requests.post(api_server.url("/api/jobs/ai/trigger"), data=inside_user_id,
                             headers={**ADMIN, "Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400
    shallow_but_wrong = json.dumps({"prompt": "hi", "user_id": [[["x"]]]})
    response = requests.post(api_server.url("/api/jobs/ai/trigger"), data=shallow_but_wrong,
                             headers={**ADMIN, "Content-Type": "application/json"}, timeout=10)
    assert response.status_code == 400 and "user_id must be a string or an integer" in response.text
    assert_clean_log(api_server)


DASHBOARD_BAD_INPUT = [
    ("/dashboard/job/bad%20id!", 400), ("/dashboard/job/" + "a" * 300, 400), ("/dashboard/job/no-such-job", 404),
    ("/dashboard/queue/nope", 404), ("/dashboard/queue/email?page=²", 400), ("/dashboard/queue/email?page=" + "9" * 50, 400),
    ("/dashboard/queue/email?state=²", 400), ("/dashboard/queue/email?page=-1", 400),
    ("/dashboard/scheduler/bad%20id/pause", 400), ("/dashboard/scheduler/x/explode", 404),
]


def test_dashboard_bad_input_is_a_4xx_page(api_server):
    for path, status in DASHBOARD_BAD_INPUT:
        method = requests.post if "/scheduler/" in path else requests.get
        response = method(api_server.url(path), headers=ADMIN, timeout=10, allow_redirects=False)
        assert response.status_code == status, (path, response.status_code, response.text[:200])
        assert "text/html" in response.headers["Content-Type"] and 'id="error-message"' in response.text
    assert_clean_log(api_server)


# --- the fuzz ----------------------------------------------------------------------------------------
odd_text = st.one_of(
    st.sampled_from(UNICODE_DIGITS + HUGE + ["", ".", "..", "%", "%00", "a/b", "../../etc/passwd", "email",
                                             "fikiri:email", "periodic-email-sync", "send_email", "\u202e",
                                             "x" * 2000, "0", "1", "50", "100"]),
    st.text(min_size=0, max_size=60),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


json_bodies = st.one_of(
    st.integers(min_value=1, max_value=30_000).map(nested),
    st.integers(min_value=1, max_value=10_000).map(lambda d: '{"prompt": "x", "user_id": ' + nested(d) + "}"),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children,
                                                                                       max_size=3),
                 max_leaves=20).map(json.dumps),
    st.dictionaries(st.sampled_from(["prompt", "user_id", "sync_type", "full_sync", "lookback_days"]),
                    st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**20, max_value=10**20),
                              st.text(max_size=30), st.sampled_from(UNICODE_DIGITS))).map(json.dumps),
    st.text(max_size=50),
)

GET_TEMPLATES = [
    "/dashboard/", "/dashboard/api/overview", "/dashboard/queue/{a}?state={b}&page={c}", "/dashboard/job/{a}",
    "/dashboard/failures", "/dashboard/scheduler", "/dashboard/metrics", "/dashboard/audit", "/dashboard/login?next={a}",
    "/api/jobs/monitor/stats?task={a}", "/api/jobs/monitor/{a}/history?limit={b}",
    "/api/jobs/monitor/failures?limit={a}&hours={b}", "/api/jobs/audit?limit={a}", "/api/jobs/scheduler/status",
    "/api/jobs/user/{a}/recent?limit={b}", "/api/jobs/{a}", "/api/jobs/queue/{a}/failed?limit={b}", "/metrics",
]
POST_TEMPLATES = [
    "/dashboard/job/{a}/retry", "/dashboard/job/{a}/cancel", "/dashboard/job/{a}/delete",
    "/dashboard/queue/{a}/retry-failed", "/dashboard/scheduler/{a}/{b}", "/dashboard/login",
    "/api/jobs/scheduler/{a}/pause", "/api/jobs/scheduler/{a}/resume", "/api/jobs/scheduler/{a}/run",
    "/api/jobs/{a}/cancel", "/api/jobs/{a}/retry",
]


def fill(template: str, a: str, b: str, c: str) -> str:
    return template.format(a=quote(a, safe=""), b=quote(b, safe=""), c=quote(c, safe=""))


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(template=st.sampled_from(GET_TEMPLATES), a=odd_text, b=odd_text, c=odd_text, admin=st.booleans())
def test_fuzz_get_routes_find_no_server_error(api_server, template, a, b, c, admin):
    headers = ADMIN if admin else {"Authorization": f"Bearer {issue_user_token('alice')}"}
    response = requests.get(api_server.url(fill(template, a, b, c)), headers=headers, timeout=10,
                            allow_redirects=False)
    assert response.status_code < 500, (template, a, b, c, response.status_code, response.text[:300])


@FUZZ
@given(template=st.sampled_from(POST_TEMPLATES), a=odd_text, b=odd_text, body=json_bodies,
       form=st.dictionaries(st.sampled_from(["token", "csrf_token", "next"]), odd_text, max_size=3))
def test_fuzz_post_routes_find_no_server_error(api_server, template, a, b, body, form):
    url = api_server.url(fill(template, a, b, ""))
    if template.startswith("/dashboard/login"):
        response = requests.post(url, data=form, timeout=10, allow_redirects=False)
    else:
        response = requests.post(url, data=body, headers={**ADMIN, "Content-Type": "application/json"}, timeout=10,
                                 allow_redirects=False)
    assert response.status_code < 500, (template, a, b, body[:200], response.status_code, response.text[:300])


@FUZZ
@given(path=st.sampled_from(["/api/jobs/sync/trigger", "/api/jobs/ai/trigger"]), body=json_bodies,
       admin=st.booleans())
def test_fuzz_trigger_bodies_find_no_server_error(api_server, path, body, admin):
    token = ADMIN_TOKEN if admin else issue_user_token("alice")
    response = requests.post(api_server.url(path), data=body.encode(), timeout=10,
                             headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    assert response.status_code < 500, (path, body[:200], response.status_code, response.text[:300])


def test_the_fuzzed_server_logged_no_traceback(api_server):
    """Run after the fuzz in a fresh server: the log check itself, against a burst of odd input."""
    for value in UNICODE_DIGITS:
        requests.get(api_server.url(f"/dashboard/queue/email?page={quote(value)}"), headers=ADMIN, timeout=10)
    assert_clean_log(api_server)
