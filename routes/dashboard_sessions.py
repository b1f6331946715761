"""Server-side dashboard sessions: a random id in the cookie, the session itself in Redis.

The cookie holds only a 256-bit random id; Redis holds who logged in (admin or a user id), the
session's CSRF token, when it started and when it was last used, under
``fikiri:dashboard:session:<sha256 of the id>`` (so a reader of Redis cannot replay an id).

* **Idle lifetime** (``JOBS_SESSION_IDLE_TIMEOUT``): the key expires that long after the last
  request. **Absolute lifetime** (``JOBS_SESSION_MAX_AGE``): a session older than that ends,
  however busy.
* **Revocation**: logout deletes the key. Each session stores an HMAC (keyed with ``SECRET_KEY``)
  of the admin token in force when it started; once ``JOBS_ADMIN_TOKEN`` or ``SECRET_KEY`` is
  rotated the fingerprint no longer matches and the session is deleted at its next use.
* The cookie is HttpOnly, SameSite=Strict, path ``/dashboard``, and Secure unless
  ``JOBS_SESSION_COOKIE_SECURE=0`` (whose default is off only under ``JOBS_INSECURE_DEV=1``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass

from flask import Response

from core.config import get_settings
from core.platform import keys
from core.platform.auth import Identity
from core.platform.connection import get_redis

logger = logging.getLogger(__name__)

COOKIE_NAME = "fikiri_session"
LOGIN_CSRF_COOKIE = "fikiri_login_csrf"


def cookie_path() -> str:
    """The dashboard's mount point: its cookies go nowhere else on the host."""
    from flask import url_for

    return url_for("dashboard.overview").rstrip("/") or "/"
LOGIN_CSRF_MAX_AGE = 3600


@dataclass(frozen=True)
class DashboardSession:
    sid: str
    identity: Identity
    csrf: str
    created: float


def _key(sid: str) -> str:
    return keys.dashboard_session(hashlib.sha256(sid.encode()).hexdigest())


def credential_fingerprint() -> str:
    """HMAC of the admin token under SECRET_KEY: changes when either is rotated."""
    settings = get_settings()
    return hmac.new(settings.secret_key.encode(), b"admin:" + settings.admin_token.encode(),
                    hashlib.sha256).hexdigest()


def create_session(identity: Identity) -> DashboardSession:
    """Start a session for ``identity``; returns it (its ``sid`` goes into the cookie)."""
    settings = get_settings()
    sid, csrf, now = secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time()
    fields = {"user_id": identity.user_id or "", "is_admin": "1" if identity.is_admin else "0", "csrf": csrf,
              "created": repr(now), "last_seen": repr(now), "fp": credential_fingerprint()}
    with get_redis().pipeline() as pipe:
        pipe.hset(_key(sid), mapping=fields)
        pipe.expire(_key(sid), min(settings.session_idle_timeout, settings.session_max_age))
        pipe.execute()
    return DashboardSession(sid, identity, csrf, now)


def load_session(sid: str | None) -> DashboardSession | None:
    """The live session named by ``sid``, refreshed; None (and the session deleted) if it has
    expired, hit its absolute lifetime, or predates a rotation of the admin token or SECRET_KEY."""
    if not sid or len(sid) > 100:
        return None
    settings = get_settings()
    data = {k.decode(): v.decode() for k, v in get_redis().hgetall(_key(sid)).items()}
    if not data:
        return None
    now = time.time()
    created, last_seen = float(data.get("created", 0)), float(data.get("last_seen", 0))
    stale = (now - created >= settings.session_max_age or now - last_seen >= settings.session_idle_timeout
             or not hmac.compare_digest(data.get("fp", ""), credential_fingerprint()))
    if stale:
        revoke_session(sid)
        return None
    remaining = int(created + settings.session_max_age - now) + 1
    with get_redis().pipeline() as pipe:
        pipe.hset(_key(sid), "last_seen", repr(now))
        pipe.expire(_key(sid), max(1, min(settings.session_idle_timeout, remaining)))
        pipe.execute()
    identity = Identity(user_id=data.get("user_id") or None, is_admin=data.get("is_admin") == "1")
    return DashboardSession(sid, identity, data.get("csrf", ""), created)


def revoke_session(sid: str | None) -> None:
    if sid:
        get_redis().delete(_key(sid))


def _cookie_flags() -> dict[str, object]:
    return {"httponly": True, "samesite": "Strict", "secure": get_settings().session_cookie_secure}


def set_session_cookie(response: Response, session: DashboardSession) -> None:
    response.set_cookie(COOKIE_NAME, session.sid, max_age=get_settings().session_max_age, path=cookie_path(),
                        **_cookie_flags())


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(COOKIE_NAME, path=cookie_path(), **_cookie_flags())


# --- login CSRF: a random cookie, and the form carries its HMAC under SECRET_KEY --------------------
def new_login_nonce() -> str:
    return secrets.token_urlsafe(32)


def login_form_token(nonce: str) -> str:
    """What the login form must send back for the ``nonce`` in its cookie."""
    return hmac.new(get_settings().secret_key.encode(), b"login:" + nonce.encode(), hashlib.sha256).hexdigest()


def login_token_valid(nonce: str | None, sent: str | None) -> bool:
    if not nonce or not sent or len(nonce) > 100:
        return False
    return hmac.compare_digest(login_form_token(nonce), sent)


def set_login_cookie(response: Response, nonce: str) -> None:
    response.set_cookie(LOGIN_CSRF_COOKIE, nonce, max_age=LOGIN_CSRF_MAX_AGE, path=cookie_path(), **_cookie_flags())
