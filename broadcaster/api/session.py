"""/api/v1/session: signing in to the console with a name and password.

A sign-in is a token like an API token, kept in an HttpOnly, SameSite=Strict
cookie (Secure over TLS) instead of a script's header, so the page's own
JavaScript never holds it. A cookie rides along with any request the browser
makes, including one another site makes it send, so every write that comes
with the cookie must also carry ``X-CSRF-Token``: a value derived from the
cookie's secret that only the page, having read this route's reply, knows
(the router checks it). A bearer token needs none: no browser sends it by
itself.

Password guesses count against the same per-address limit as the studio
ingest and Icecast's /admin (the same users and passwords): past it, 429 with
no scrypt run. A password someone else chose (the demo's, an admin's reset)
must be changed first: until then the session may only change it or sign out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
from typing import Any

from broadcaster import metrics
from broadcaster.api.call import ApiError, Call, Reply, Route
from broadcaster.api.models import PasswordChange, Session, SessionCreate
from broadcaster.control.auth import Principal

COOKIE = "bc_session"
CSRF_HEADER = "x-csrf-token"
# What a session whose password must change may still do: see itself, change it, sign out.
WHILE_MUST_CHANGE = {("GET", "/api/v1/session"), ("DELETE", "/api/v1/session"), ("POST", "/api/v1/me/password"),
                     ("GET", "/api/v1/me")}


def csrf_for(secret: str) -> str:
    """The CSRF value of a session: a keyed digest of its secret, so nothing more is stored and a
    restart keeps it. Knowing it tells nothing of the secret."""
    digest = hmac.new(b"broadcaster console csrf", secret.encode("utf-8"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def csrf_matches(secret: str, sent: str | None) -> bool:
    return sent is not None and hmac.compare_digest(csrf_for(secret), sent.strip())


def cookie_secret(call_request: Any) -> str | None:
    raw = call_request.getCookie(COOKIE.encode("ascii"))
    return raw.decode("ascii", "replace") if raw else None


def served_over_tls(request: Any) -> bool:
    """HTTPS here (server.tls), or at a reverse proxy on this machine that says so: a proxy elsewhere
    cannot be told from a client lying in its headers, so only a loopback peer is believed."""
    if request.isSecure():
        return True
    peer = getattr(request.getClientAddress(), "host", "") or ""
    forwarded = (request.getHeader("x-forwarded-proto") or "").strip().lower()
    return forwarded == "https" and (peer.startswith("127.") or peer == "::1")


def _set_cookie(call: Call, value: str, max_age: int) -> None:
    secure = "; Secure" if served_over_tls(call.request) else ""
    call.request.setHeader(b"Set-Cookie", f"{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; "
                                          f"SameSite=Strict{secure}".encode("ascii"))
    call.request.setHeader(b"Cache-Control", b"no-store")


def _session(call: Call, secret: str, principal: Principal, expires_at: float | None) -> Session:
    return Session(name=principal.name, role=principal.role, zones=list(principal.zones),  # type: ignore[arg-type]
                   permissions=sorted(principal.permissions), csrf=csrf_for(secret),
                   must_change_password=principal.must_change_password, expires_at=expires_at,
                   console={"tile_url": call.app.config.console.tile_url})  # type: ignore[arg-type]


async def sign_in(call: Call) -> Reply:
    content_type = (call.request.getHeader("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":  # a form on another site cannot send this without a preflight
        raise ApiError(415, "unsupported_media_type", "send the sign-in as application/json")
    body = call.body(SessionCreate)
    user = await _check_password(call, body.name, body.password)
    if user is None:
        raise ApiError(401, "unauthenticated", "wrong user name or password")
    hours = call.app.config.api.session_hours
    row = await call.storage.users.new_session(user, hours, call.actor_named(user["name"]), call.app.wall())
    _set_cookie(call, row["token"], hours * 3600)
    return 200, _session(call, row["token"], Principal.from_row(user), row["expires_at"])


async def _check_password(call: Call, name: str, password: str) -> dict[str, Any] | None:
    """The user, if the password is theirs; counted against the address's limit (429 past it, with no
    scrypt run), shared with the studio ingest and /admin."""
    guard, address, clock = call.passwords, call.remote or "", call.app.reactor.seconds()
    if guard is not None and not guard.attempt(address, clock):
        metrics.auth_limited_total.labels("console").inc()
        wait = guard.retry_after_s(address, clock)
        raise ApiError(429, "too_many_failures", f"too many wrong passwords from {address}; try again in "
                       f"{wait:.0f} s", retry_after_s=max(1, math.ceil(wait)))
    user = await call.storage.users.by_password(name, password)
    if user is None:
        metrics.auth_failures_total.labels("console").inc()
    elif guard is not None:
        guard.forgive(address, clock)
    return user


async def current(call: Call) -> Reply:
    secret = cookie_secret(call.request)
    if not call.principal.session or secret is None:
        raise ApiError(401, "unauthenticated", "not signed in to the console (this route takes its cookie)")
    return 200, _session(call, secret, call.principal, call.principal.token_expires_at)


async def sign_out(call: Call) -> Reply:
    if call.principal.session and call.principal.token:
        await call.storage.users.end_session(call.principal.token, call.actor)
    _set_cookie(call, "", 0)
    return 204, None


async def change_password(call: Call) -> Reply:
    body = call.body(PasswordChange)
    name = call.principal.name
    if await _check_password(call, name, body.current) is None:  # a stolen session cannot guess it freely
        raise ApiError(403, "wrong_password", "the current password is not right; nothing was changed")
    if body.new == body.current:
        raise ApiError(400, "bad_value", "new: must differ from the current password")
    await call.storage.users.set_password(name, body.new, call.actor, keep_token=call.principal.token)
    return 204, None


ROUTES = [
    Route("POST", "/api/v1/session", sign_in, "Sign in to the console: sets its cookie; the reply's csrf goes in "
          "X-CSRF-Token on every write", Session, 200, SessionCreate, errors=(401, 415, 429), public=True),
    Route("GET", "/api/v1/session", current, "The console's sign-in (by its cookie), with its csrf value", Session),
    Route("DELETE", "/api/v1/session", sign_out, "Sign out: the session ends and its cookie is cleared", None, 204),
    Route("POST", "/api/v1/me/password", change_password, "Change one's own password (every other console "
          "session ends)", None, 204, PasswordChange, errors=(403,)),
]
