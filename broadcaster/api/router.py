"""The route table and the twisted Resource that serves /api/v1/.

The router matches the path and method, authenticates the bearer token
(through the users repository, off the reactor), runs the handler (an
``async def``, wrapped with ``ensureDeferred``) and writes its reply. Every
error becomes ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from broadcaster import metrics
from broadcaster.api import (
    alerts,
    bulletins,
    calendar,
    channels,
    events,
    link,
    logs,
    loudspeakers,
    media,
    programmes,
    relays,
    reports,
    session,
    tokens,
    users,
    zones,
)
from broadcaster.api import speech as speech_api
from broadcaster.api.call import ApiError, Call, Raw, Reply, Route, Stream
from broadcaster.api.models import Me
from broadcaster.control.auth import Principal
from broadcaster.control.logins import LoginGuard
from broadcaster.control.space import DiskFull, is_full
from broadcaster.storage import Conflict, Exists
from broadcaster.storage.users import TOUCH_EVERY_S

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer

log = logging.getLogger(__name__)

_DOCUMENT: dict[str, Any] | None = None


async def openapi(call: Call) -> Reply:
    from broadcaster.api.openapi import committed

    global _DOCUMENT
    if _DOCUMENT is None:
        _DOCUMENT = committed()
    return 200, Raw("application/json; charset=utf-8", json.dumps(_DOCUMENT, ensure_ascii=False))


async def me(call: Call) -> Reply:
    p = call.principal
    return 200, Me.model_validate({"name": p.name, "role": p.role, "zones": list(p.zones), "token": p.token})


ROUTES: list[Route] = [
    Route("GET", "/api/v1/openapi.json", openapi, "This document", public=True),
    Route("GET", "/api/v1/me", me, "Who the token belongs to", Me),
    *session.ROUTES,
    *zones.ROUTES,
    *channels.ROUTES,
    *loudspeakers.ROUTES,
    *media.ROUTES,
    *programmes.ROUTES,
    *relays.ROUTES,
    *alerts.ROUTES,
    *speech_api.ROUTES,
    *bulletins.ROUTES,
    *logs.ROUTES,
    *reports.ROUTES,
    *tokens.ROUTES,
    *users.ROUTES,
    *link.ROUTES,
    *events.ROUTES,
    *calendar.ROUTES,
]


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any], str | None]:
    return status, {"error": {"code": code, "message": message}}, None


class AdminApi(Resource):
    isLeaf = True

    def __init__(self, app: BroadcastServer, passwords: LoginGuard | None = None) -> None:
        """``passwords``: failed password checks per address, shared with the studio ingest and
        /admin (the same users): console sign-ins count against the same limit."""
        super().__init__()
        self.app = app
        self.passwords = passwords or LoginGuard()
        # Invalid tokens per address: 30 a minute (a commune office behind NAT runs a few scripts),
        # then 429 with no lookup until the minute has passed.
        self.logins = LoginGuard(max_failures=30, window_s=60.0)
        self._touched: dict[str, float] = {}  # token id -> when its last use was last written
        app.storage.db.bind(app.reactor)

    def render(self, request: Request) -> int:
        ensureDeferred(self._respond(request)).addErrback(
            lambda f: log.error("API reply failed: %s", f.getTraceback()))
        return NOT_DONE_YET

    async def _respond(self, request: Request) -> None:
        try:
            result = self._shape(await self._handle(request))
        except Exception:
            result = self._failed(Failure(), request)
        self._finish(result, request)

    async def _handle(self, request: Request) -> Reply:
        path = request.path.decode("utf-8", "replace").rstrip("/")
        method = request.method.decode("ascii", "replace")
        matches = [(r, m) for r in ROUTES if (m := r.pattern.match(path))]
        if not matches:
            raise ApiError(404, "not_found", f"no API route {path!r}; see /api/v1/openapi.json")
        route_match = next(((r, m) for r, m in matches if r.method == method), None)
        if route_match is None:
            allowed = ", ".join(sorted({r.method for r, _ in matches}))
            request.setHeader(b"Allow", allowed.encode("ascii"))
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed here; use {allowed}")
        route, match = route_match
        principal = await self._authenticate(request, route)
        args: dict[bytes, list[bytes]] = request.args or {}
        query = {k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace") for k, v in args.items() if v}
        if principal.session and principal.must_change_password and (
                method, route.path) not in session.WHILE_MUST_CHANGE:  # a script's token is not a password
            raise ApiError(403, "must_change_password", "the password was set by someone else: change it first "
                           "(POST /api/v1/me/password)")
        return await route.handler(Call(request, principal, dict(match.groupdict()), query, self.app,
                                        self.passwords))

    async def _authenticate(self, request: Request, route: Route) -> Principal:
        remote = getattr(request.getClientAddress(), "host", None)
        if route.public:
            return Principal(name="anonymous", role="viewer", remote=remote)
        header = (request.getHeader("authorization") or "").strip()
        cookie = session.cookie_secret(request) if not header else None
        if cookie is None and not header.lower().startswith("bearer "):
            raise ApiError(401, "unauthenticated", "send 'Authorization: Bearer <token>' (broadcaster user token), "
                           "or sign in to the console")
        if cookie is not None and request.method not in (b"GET", b"HEAD") and not session.csrf_matches(
                cookie, request.getHeader(session.CSRF_HEADER)):
            # Before any lookup: a forged request from another site costs nothing and does nothing.
            metrics.auth_failures_total.labels("csrf").inc()
            raise ApiError(403, "csrf", "a write with the console's cookie needs its X-CSRF-Token header "
                           "(from GET /api/v1/session)")
        clock = self.app.reactor.seconds()
        address = remote or ""
        if not self.logins.allowed(address, clock):  # refused before any lookup: a flood costs nothing
            metrics.auth_limited_total.labels("api").inc()
            wait = self.logins.retry_after_s(address, clock)
            raise ApiError(429, "too_many_failures", f"too many invalid tokens from {address}; try again in "
                           f"{wait:.0f} s", retry_after_s=max(1, math.ceil(wait)))
        now = self.app.wall()
        secret = cookie if cookie is not None else header[7:].strip()
        user = await self.app.storage.users.by_token(secret, now)
        if user is not None and cookie is not None and not user.get("session") and not user.get("expired"):
            user = None  # an API token copied into the cookie: cookies carry sessions only
        if user is None or user.get("expired"):
            metrics.auth_failures_total.labels("api").inc()
            if user is None:  # a guess; an expired token is a script someone forgot, not an attack
                self.logins.failed(address, clock)
                if cookie is not None:
                    raise ApiError(401, "unauthenticated", "the console session has ended; sign in again")
                raise ApiError(401, "unauthenticated", "the token is not valid (unknown or revoked)")
            if cookie is not None:
                raise ApiError(401, "unauthenticated", "the console session has expired; sign in again")
            raise ApiError(401, "unauthenticated", "the token has expired; make a new one (POST /api/v1/tokens "
                           "with another, or broadcaster user token)")
        self._touch(user, now, clock)
        return Principal.from_row(user, remote)

    def _touch(self, user: dict[str, Any], now: float, clock: float) -> None:
        """last_used_at, written beside the request and never waited for: at most once a minute
        per token, counted here too, so a full disk (the write failing) is tried once a minute,
        not on every request."""
        token_id = user["token_id"]
        used = max(user.get("token_used_at") or 0.0, self._touched.get(token_id, 0.0))
        if now - used < TOUCH_EVERY_S:
            return
        if len(self._touched) > 10_000:
            self._touched.clear()
        self._touched[token_id] = now
        self.app.storage.users.token_used(token_id, now).addErrback(
            lambda f: log.warning("token %s: last use not recorded: %s", token_id, f.getErrorMessage()))

    @staticmethod
    def _shape(result: Reply) -> tuple[int, Any, str | None]:
        status, body = result
        if isinstance(body, Stream):
            return status, body, body.content_type
        if isinstance(body, Raw):
            return status, body.text, body.content_type
        if isinstance(body, BaseModel):
            # Serialised by pydantic's core in one pass: a page of 500 rows costs the reactor
            # a millisecond or two, not the tens that model_dump + json.dumps(indent) took.
            return status, body.model_dump_json(by_alias=True), "application/json; charset=utf-8"
        return status, body, None

    @staticmethod
    def _failed(failure: Failure, request: Request) -> tuple[int, Any, str | None]:
        if failure.check(ApiError):
            exc: ApiError = failure.value
            if exc.status == 401:
                request.setHeader(b"WWW-Authenticate", b'Bearer realm="broadcaster"')
            if exc.retry_after_s is not None:
                request.setHeader(b"Retry-After", str(exc.retry_after_s).encode("ascii"))
            return _error(exc.status, exc.code, exc.message)
        if failure.check(Exists):
            return _error(409, "exists", str(failure.value))
        if failure.check(Conflict):
            return _error(409, "conflict", f"the change conflicts with stored data: {failure.value}")
        if is_full(failure.value):  # audio goes on; this change waits for space
            log.warning("API %s %s refused, the disk is full: %s", request.method.decode("ascii", "replace"),
                        request.path.decode("utf-8", "replace"), failure.value)
            message = str(failure.value) if failure.check(DiskFull) else (
                "the database's disk is full: nothing was changed; free space, then try again")
            return _error(507, "insufficient_storage", message)
        log.error("API request failed: %s", failure.getTraceback())
        return _error(500, "internal", "the server failed; the error is in its log")

    @staticmethod
    def _finish(result: tuple[int, Any, str | None], request: Request) -> None:
        if request.finished or request._disconnected:
            return
        status, body, content_type = result
        metrics.http_requests_total.labels("api", str(status)).inc()
        request.setResponseCode(status)
        if status != 204:
            if content_type is None:
                request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
                request.write(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
            elif isinstance(body, Stream):  # it stays open: the stream owns the request from here
                request.setHeader(b"Content-Type", content_type.encode("ascii"))
                request.setHeader(b"Cache-Control", b"no-store")
                request.setHeader(b"X-Accel-Buffering", b"no")  # a reverse proxy must pass each event on at once
                body.start(request)
                return
            else:
                request.setHeader(b"Content-Type", content_type.encode("ascii"))
                request.write(body if isinstance(body, bytes) else str(body).encode("utf-8"))
        request.finish()
