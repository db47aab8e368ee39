"""One API call as the handlers see it, the route declaration, and the errors.

A handler is ``async def handler(call: Call) -> Reply``: it validates its
body with ``call.body(Model)`` (a pydantic model from api.models), checks
scope with ``call.authorize``, reaches storage only through repository
methods that return Deferreds (awaited: nothing here waits on the database
lock), and control only through the facade on ``call.app``. Facade calls that
may become asynchronous are awaited through ``facade(...)``
(``maybeDeferred``), so they can return a Deferred later with no change here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError
from twisted.internet.defer import maybeDeferred
from twisted.web.server import Request

from broadcaster.api.models import validation_message
from broadcaster.control.auth import Action, Forbidden, Principal, authorize, visible_zones
from broadcaster.control.logins import LoginGuard
from broadcaster.storage import Actor

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer
    from broadcaster.storage import Storage

MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32  # no request model nests more than a few levels
DEFAULT_LIMIT, MAX_LIMIT = 50, 500

M = TypeVar("M", bound=BaseModel)
P = ParamSpec("P")
T = TypeVar("T")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after_s = retry_after_s  # a Retry-After header (503, 429)


@dataclass(frozen=True)
class Raw:
    """A reply that is not JSON (the CSV report); bytes for a binary one (a speech preview, the XLSX report,
    the link's media)."""

    content_type: str
    text: str | bytes


@dataclass(frozen=True)
class Stream:
    """A reply that stays open (server-sent events): the router writes the status and headers, then
    hands the request to ``start``, which owns it from then on and finishes it (or the client goes).
    The router does not finish it."""

    content_type: str
    start: Callable[[Request], None]


Reply = tuple[int, BaseModel | Raw | Stream | None]
Handler = Callable[["Call"], Awaitable[Reply]]


async def facade(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call the control facade; a Deferred it may return one day is awaited."""
    result: T = await maybeDeferred(fn, *args, **kwargs)
    return result


@dataclass
class Call:
    request: Request
    principal: Principal
    params: dict[str, str]
    query: dict[str, str]
    app: BroadcastServer
    passwords: LoginGuard | None = None  # failed password checks per address (shared with the studio ingest)

    @property
    def remote(self) -> str | None:
        return self.principal.remote

    @property
    def actor(self) -> Actor:
        return Actor(self.principal.name, self.principal.remote)

    def actor_named(self, name: str) -> Actor:
        """Who acts, before the call has a principal (signing in)."""
        return Actor(name, self.principal.remote)

    @property
    def storage(self) -> Storage:
        return self.app.storage

    def body(self, model: type[M]) -> M:
        """Parse a JSON object body into the model: unknown fields, wrong types,
        missing fields and values out of range are 400s naming the key path.
        A body that is not UTF-8 JSON text, nests deeper than MAX_JSON_DEPTH or
        holds a lone UTF-16 surrogate is a 400 ``bad_json``, never a 500."""
        if getattr(self.request, "too_large", False):  # the door kept none of it (web.site.BoundedRequest)
            raise ApiError(413, "too_large", f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
        raw = self.request.content.read(MAX_JSON_BYTES + 1) if self.request.content else b""
        if len(raw) > MAX_JSON_BYTES:
            raise ApiError(413, "too_large", f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
        return validate(model, parse_json(raw))

    def authorize(self, action: Action, *zones: str) -> None:
        try:
            authorize(self.principal, action, zones, self.app.zones)
        except Forbidden as exc:
            raise ApiError(403, "forbidden", str(exc)) from None

    def may(self, action: Action, *zones: str) -> bool:
        try:
            authorize(self.principal, action, zones, self.app.zones)
        except Forbidden:
            return False
        return True

    def may_see(self, *zones: str) -> bool:
        """Whether the caller may read something in these zones. Something it may not read is
        answered as if it did not exist (404, or "no such ..." when referred to), so one commune
        cannot learn another's ids; 403 is for what the caller sees but may not change."""
        return self.may(Action.READ, *zones)

    def visible(self) -> set[str] | None:
        """The zones the caller may read; None means all (an admin)."""
        return visible_zones(self.principal, self.app.zones)

    def paging(self) -> tuple[int, int]:
        limit = int_query(self.query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = int_query(self.query, "offset", 0, 0, 10**9)
        return limit, offset


def parse_json(raw: bytes) -> Any:
    """A request body as JSON: UTF-8 text (a BOM allowed), at most MAX_JSON_DEPTH deep, no lone
    surrogates (they cannot be stored or answered as UTF-8); anything else is ApiError 400 bad_json.

    Nesting is bounded twice: json.loads recurses once per level and raises RecursionError (not a
    ValueError) from about a thousand, which is caught; what parses is then walked, without
    recursion and stopping at the limit. The body's size (MAX_JSON_BYTES) bounds both. Almost every
    body has fewer brackets than the limit in all, and skips the walk on one count."""
    try:
        text = raw.decode("utf-8-sig") if raw else "{}"
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: not UTF-8 text (byte 0x{raw[exc.start]:02x} "
                       f"at offset {exc.start})") from None
    too_deep = ApiError(400, "bad_json", f"the body is nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        data = json.loads(text)
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and nested_over(data, MAX_JSON_DEPTH):
        raise too_deep
    try:
        if "\\u" in text:  # strict UTF-8 holds no surrogate: only an escape makes one
            json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(400, "bad_json", f"the body holds a lone UTF-16 surrogate ({exc.object[exc.start]!a}), "
                       "which is not text") from None
    return data


def nested_over(data: Any, limit: int) -> bool:
    """Whether parsed JSON nests arrays and objects more than ``limit`` deep: walked a level at a
    time (no recursion), stopping at the limit."""
    level = [data] if isinstance(data, (dict, list)) else []
    depth = 1
    while level:
        if depth > limit:
            return True
        below: list[Any] = []
        for value in level:
            below.extend([c for c in (value.values() if isinstance(value, dict) else value)
                          if isinstance(c, (dict, list))])
        level, depth = below, depth + 1
    return False


def validate(model: type[M], data: Any) -> M:
    if not isinstance(data, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        code, message = validation_message(model, exc)
        raise ApiError(400, code, message) from None


def int_query(query: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, "bad_query", f"query parameter {name!r} must be an integer") from None
    if not lo <= value <= hi:
        raise ApiError(400, "bad_query", f"query parameter {name!r} must be from {lo} to {hi}")
    return value


def time_query(query: dict[str, str], name: str, default: float) -> float:
    text = query.get(name)
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "bad_query", f"{name!r} must be an ISO 8601 date/time or Unix seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class Param:
    """A query or path parameter, for the OpenAPI document."""

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    where: str = "query"
    required: bool = False


@dataclass(frozen=True)
class Route:
    """One route: how it is matched and run, and what the OpenAPI document says of it.

    ``errors`` lists the error statuses beyond those every route of its kind
    has (401 unless public; 400 and 413 with a JSON body; 400 when paged)."""

    method: str
    path: str
    handler: Handler
    summary: str
    response: type[BaseModel] | None = None
    status: int = 200
    body: type[BaseModel] | None = None
    body_media: str | None = None   # a body that is not JSON: its media type
    errors: tuple[int, ...] = ()
    query: tuple[Param, ...] = ()
    paged: bool = False
    also: tuple[tuple[int, type[BaseModel]], ...] = ()  # other success replies
    csv: bool = False
    reply_media: str | None = None  # a success reply that is not JSON: its media type (audio/ogg)
    xlsx: bool = False  # the reply may also be an XLSX workbook
    public: bool = False
    pattern: re.Pattern[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$"
        object.__setattr__(self, "pattern", re.compile(regex))

    @property
    def tag(self) -> str:
        return self.path.removeprefix("/api/v1/").split("/")[0].removesuffix(".json")
