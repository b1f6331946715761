"""Who is calling: the admin token, signed per-user tokens, or the host app's own identity hook.

``Authorization: Bearer <token>`` is resolved to an :class:`Identity`:

* the admin token (``JOBS_ADMIN_TOKEN``, compared in constant time) sees everything;
* a user token, issued by :func:`issue_user_token` and signed with ``SECRET_KEY`` (itsdangerous),
  identifies one user, who sees only their own jobs;
* a host app can install its own resolver with :func:`set_identity_resolver` (for example to
  reuse its session login); it returns an Identity or None.

With no admin token configured, the API refuses every request unless ``JOBS_INSECURE_DEV=1``
was set explicitly, in which case every caller is an admin (development only).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from core.config import get_settings
from core.errors import AuthError, NotConfiguredError

logger = logging.getLogger(__name__)

_SALT = "fikiri-jobs-user-token"


@dataclass(frozen=True)
class Identity:
    user_id: str | None  # None for the admin
    is_admin: bool = False

    def can_see(self, job_user_id: str | None) -> bool:
        return self.is_admin or (job_user_id is not None and job_user_id == self.user_id)


ADMIN = Identity(user_id=None, is_admin=True)

Resolver = Callable[[str | None], "Identity | None"]
_custom_resolver: Resolver | None = None


def set_identity_resolver(resolver: Resolver | None) -> None:
    """Let the host app resolve identities itself; it gets the bearer token (or None)."""
    global _custom_resolver
    _custom_resolver = resolver


def _serializer() -> URLSafeTimedSerializer:
    secret = get_settings().secret_key
    if not secret:
        raise NotConfiguredError("SECRET_KEY is not set, so user tokens can be neither issued nor checked")
    return URLSafeTimedSerializer(secret, salt=_SALT)


def issue_user_token(user_id: str | int) -> str:
    """A signed token naming ``user_id``; valid for ``JOBS_USER_TOKEN_MAX_AGE`` seconds."""
    return _serializer().dumps({"uid": str(user_id)})


def verify_user_token(token: str) -> str:
    """The user id inside a valid token, else :class:`AuthError` saying why."""
    try:
        data = _serializer().loads(token, max_age=get_settings().user_token_max_age)
    except SignatureExpired as exc:
        raise AuthError("the user token has expired; issue a new one") from exc
    except BadSignature as exc:
        raise AuthError("the token is not valid (bad signature or unknown token)") from exc
    if not isinstance(data, dict) or not isinstance(data.get("uid"), str):
        raise AuthError("the token is not valid (no user in it)")
    return data["uid"]


def bearer_token(header_value: str | None) -> str | None:
    """The token from an ``Authorization`` header value, or None if absent."""
    if not header_value:
        return None
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'")
    return token.strip()


def resolve_identity(token: str | None) -> Identity:
    """Map a bearer token (or None) to an Identity, or raise a 401/503 error saying why."""
    settings = get_settings()
    if _custom_resolver is not None:
        identity = _custom_resolver(token)
        if identity is not None:
            return identity
    if not settings.admin_token and not settings.insecure_dev:
        raise NotConfiguredError(
            "the jobs API is locked: set JOBS_ADMIN_TOKEN (or JOBS_INSECURE_DEV=1 for local development only)"
        )
    open_dev = settings.insecure_dev and not settings.admin_token
    if token is None:
        if open_dev:
            return ADMIN
        raise AuthError("missing token: send 'Authorization: Bearer <token>'")
    if settings.admin_token and hmac.compare_digest(token.encode(), settings.admin_token.encode()):
        return ADMIN
    if open_dev and not settings.secret_key:
        return ADMIN
    return Identity(user_id=verify_user_token(token))
