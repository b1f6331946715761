"""Who may see which job, at the path DESIGN.md gives (``core.auth.issue_user_token``).

A façade over :mod:`core.platform.auth`, where it is defined; code inside ``core`` imports from there.
"""

from core.errors import AuthError, ForbiddenError, NotConfiguredError
from core.platform.auth import (
    Identity,
    bearer_token,
    issue_user_token,
    resolve_identity,
    set_identity_resolver,
    verify_user_token,
)

__all__ = ["AuthError", "ForbiddenError", "Identity", "NotConfiguredError", "bearer_token", "issue_user_token",
           "resolve_identity", "set_identity_resolver", "verify_user_token"]
