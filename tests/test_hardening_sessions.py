"""Dashboard sessions (issue 15) through Flask's test client against a real Redis: the cookie is a
random id (never the token), Secure/HttpOnly/SameSite=Strict by default, the login form needs its
CSRF token, logout and rotating the admin token revoke the session, idle and absolute lifetimes."""

from __future__ import annotations

import hashlib
import re
import time

import pytest

from core.config import reload_settings
from core.platform import keys
from routes.dashboard_sessions import COOKIE_NAME, LOGIN_CSRF_COOKIE
from tests.conftest import ADMIN_TOKEN


def login_csrf(client) -> str:
    page = client.get("/dashboard/login").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def log_in(client, token: str = ADMIN_TOKEN):
    response = client.post("/dashboard/login", data={"token": token, "csrf_token": login_csrf(client)})
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return response


def session_cookie(response) -> str:
    return next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE_NAME + "="))


def sid_of(client) -> str:
    return client.get_cookie(COOKIE_NAME, path="/dashboard").value


def redis_key(sid: str) -> str:
    return keys.dashboard_session(hashlib.sha256(sid.encode()).hexdigest())


def logged_in(client) -> bool:
    return client.get("/dashboard/").status_code == 200


def test_the_cookie_is_a_random_id_with_secure_flags_and_the_session_lives_in_redis(client, api_env):
    response = log_in(client)
    header = session_cookie(response)
    assert "; Secure" in header and "; HttpOnly" in header and "SameSite=Strict" in header
    assert "Path=/dashboard" in header
    sid = sid_of(client)
    assert ADMIN_TOKEN not in header and len(sid) >= 40
    assert all(ADMIN_TOKEN not in h for h in response.headers.getlist("Set-Cookie"))
    stored = api_env.client().hgetall(redis_key(sid))
    assert stored[b"is_admin"] == b"1" and ADMIN_TOKEN.encode() not in b"".join(stored.values())
    assert 0 < api_env.client().ttl(redis_key(sid)) <= 30 * 60
    assert logged_in(client)


@pytest.mark.parametrize("env", [{"JOBS_INSECURE_DEV": "1"}, {"JOBS_SESSION_COOKIE_SECURE": "0"}])
def test_secure_flag_is_off_only_when_asked(client, monkeypatch, env):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reload_settings()
    assert "; Secure" not in session_cookie(log_in(client))


def test_login_needs_its_csrf_token(client):
    assert client.post("/dashboard/login", data={"token": ADMIN_TOKEN}).status_code == 400
    login_csrf(client)  # a nonce cookie, but a token made up by an attacker
    refused = client.post("/dashboard/login", data={"token": ADMIN_TOKEN, "csrf_token": "attacker-guess"})
    assert refused.status_code == 400 and "another site" in refused.get_data(as_text=True)
    assert not any(h.startswith(COOKIE_NAME + "=") for h in refused.headers.getlist("Set-Cookie"))
    cross = client.post("/dashboard/login", data={"token": ADMIN_TOKEN, "csrf_token": login_csrf(client)},
                        headers={"Origin": "http://attacker.example"})
    assert cross.status_code == 400 and not logged_in(client)


def test_a_login_token_from_another_browser_does_not_work(client, api_env):
    from app import create_app

    other = create_app().test_client()
    stolen = login_csrf(other)  # valid only with the nonce cookie of that other browser
    login_csrf(client)
    assert client.post("/dashboard/login", data={"token": ADMIN_TOKEN, "csrf_token": stolen}).status_code == 400
    assert other.get_cookie(LOGIN_CSRF_COOKIE, path="/dashboard") is not None


def test_logout_revokes_the_session_server_side(client, api_env):
    log_in(client)
    sid = sid_of(client)
    page = client.get("/dashboard/").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert client.post("/dashboard/logout", data={"csrf_token": csrf}).status_code == 302
    assert api_env.client().exists(redis_key(sid)) == 0
    client.set_cookie(COOKIE_NAME, sid, path="/dashboard")  # a copy of the cookie kept by an attacker
    assert not logged_in(client)


def test_rotating_the_admin_token_revokes_sessions(client, api_env, monkeypatch):
    log_in(client)
    sid = sid_of(client)
    monkeypatch.setenv("JOBS_ADMIN_TOKEN", "rotated-admin-token-9876543210")
    reload_settings()
    assert not logged_in(client)
    assert api_env.client().exists(redis_key(sid)) == 0


def test_idle_and_absolute_lifetimes(client, api_env):
    log_in(client)
    sid = sid_of(client)
    redis = api_env.client()
    redis.hset(redis_key(sid), "last_seen", repr(time.time() - 31 * 60))  # idle past 30 minutes
    assert not logged_in(client)

    log_in(client)
    sid = sid_of(client)
    redis.hset(redis_key(sid), "created", repr(time.time() - 12 * 3600 - 1))  # busy, but 12 h old
    assert not logged_in(client)
    assert redis.exists(redis_key(sid)) == 0
