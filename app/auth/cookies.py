"""Browser sign-in for the dashboard, without weakening the API's token rules.

An analyst pastes a token (the same JWT the API takes). It is verified exactly as a bearer token
(`decode_token`: algorithm allow-list, signature, exp, aud, iss) and must carry the icb-analyst or
admin role; it is then kept in a cookie that is HttpOnly (no script can read it), SameSite=Strict
(never sent on a cross-site request), Path=/dashboard (never sent to /api or /fhir, which read
only the Authorization header anyway) and Secure when the request came over HTTPS, and that
expires with the token. Every dashboard request verifies it again.

The sign-in form carries a one-time value that must match a cookie set with the form
(double-submit; the cookie is SameSite=Strict and scoped to the login path), and a POST whose
Origin header names another site is refused. The Origin check alone cannot do: the app's
Referrer-Policy is no-referrer, under which browsers send `Origin: null` on form posts.
"""

import hmac
import secrets
from datetime import UTC, datetime

from jose import jwt

from app.auth.tokens import decode_token
from app.core.errors import Forbidden, Unauthorized
from app.db.base import utc_now
from app.models.enums import Role
from app.models.user import User

SESSION_COOKIE = "pharmref_dashboard"
CSRF_COOKIE = "pharmref_dashboard_login"
DASHBOARD_PATH = "/dashboard"
LOGIN_PATH = "/dashboard/login"
DASHBOARD_ROLES = (Role.ICB_ANALYST, Role.ADMIN)
CSRF_TTL_SECONDS = 3600
# Browsers keep cookies of up to 4,096 bytes (name and attributes included).
MAX_COOKIE_TOKEN_BYTES = 3800


def verify_dashboard_token(token: str) -> tuple[User, datetime]:
    """The caller and the token's expiry, for a token the API would accept and whose role may use
    the dashboard; Unauthorized or Forbidden otherwise."""
    token = token.strip()
    if not token:
        raise Unauthorized("Paste a token.")
    user = decode_token(token)
    if user.role not in DASHBOARD_ROLES:
        raise Forbidden(
            f"The dashboard is for the icb-analyst and admin roles; this token's role is {user.role}."
        )
    if len(token) > MAX_COOKIE_TOKEN_BYTES:
        raise Unauthorized("This token is too large to keep in a browser cookie.")
    # Read only after decode_token has verified the signature and that exp is present.
    expires = datetime.fromtimestamp(int(jwt.get_unverified_claims(token)["exp"]), tz=UTC)
    return user, expires


def dashboard_user(token: str | None) -> User | None:
    """The signed-in analyst from the session cookie, or None when it is missing, no longer
    valid or for a role that may not use the dashboard."""
    if not token:
        return None
    try:
        user, _expires = verify_dashboard_token(token)
    except (Unauthorized, Forbidden):
        return None
    return user


def seconds_left(expires: datetime) -> int:
    return max(int((expires - utc_now()).total_seconds()), 0)


def new_form_token() -> str:
    return secrets.token_urlsafe(32)


def same_origin(origin: str | None, own: str) -> bool:
    """False only when the browser named another origin (absent or "null" cannot be judged)."""
    return origin in (None, "null") or origin.rstrip("/") == own.rstrip("/")


def check_form_token(*, submitted: str, expected: str | None, origin: str | None, own: str) -> None:
    if not same_origin(origin, own):
        raise Forbidden("Sign-in from another site is refused.")
    if not expected or not submitted or not hmac.compare_digest(submitted, expected):
        raise Forbidden("The sign-in form has expired; sign in again.")
