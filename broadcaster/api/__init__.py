"""The admin API under /api/v1/: JSON in and out, bearer tokens, zone scopes.

Every route is declared once in ``ROUTES`` with the action it needs; the
router authenticates, and each handler names the zones it touches to
``authorize`` (broadcaster.control.auth) before it reads or changes anything. The
OpenAPI document (broadcaster/openapi.json) describes the same routes, and
a test keeps the two equal.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from importlib import resources
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from broadcaster import metrics
from broadcaster.config import ID_PATTERN, MIN_KEY_LENGTH, ZONE_KINDS
from broadcaster.control.auth import Action, Forbidden, Principal, authorize, visible_zones
from broadcaster.storage import Conflict
from broadcaster.storage.reports import broadcast_report, report_csv

if TYPE_CHECKING:
    from broadcaster.app import BroadcastServer

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 * 1024
DEFAULT_LIMIT, MAX_LIMIT = 50, 500


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Call:
    request: Request
    principal: Principal
    params: dict[str, str]
    query: dict[str, str]
    app: BroadcastServer

    @property
    def remote(self) -> str | None:
        return self.principal.remote

    def body(self, spec: dict[str, tuple[type | tuple[type, ...], bool]]) -> dict[str, Any]:
        """Parse a JSON object body: unknown fields, wrong types and missing required fields are 400s."""
        raw = self.request.content.read(MAX_JSON_BYTES + 1) if self.request.content else b""
        if len(raw) > MAX_JSON_BYTES:
            raise ApiError(413, "too_large", f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
        try:
            data = json.loads(raw or b"{}")
        except ValueError as exc:
            raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_json", "the body must be a JSON object")
        unknown = sorted(set(data) - set(spec))
        if unknown:
            raise ApiError(400, "unknown_field", f"unknown field {unknown[0]!r}; accepted: {', '.join(sorted(spec))}")
        for name, (kinds, required) in spec.items():
            if name not in data or data[name] is None:
                if required:
                    raise ApiError(400, "missing_field", f"field {name!r} is required")
                continue
            value = data[name]
            kinds_tuple = kinds if isinstance(kinds, tuple) else (kinds,)
            if not isinstance(value, kinds_tuple) or (isinstance(value, bool) and bool not in kinds_tuple):
                expected = " or ".join(k.__name__ for k in kinds_tuple)
                raise ApiError(400, "wrong_type", f"field {name!r} must be {expected}, got {type(value).__name__}")
        return data

    def authorize(self, action: Action, *zones: str) -> None:
        try:
            authorize(self.principal, action, zones, self.app.zones)
        except Forbidden as exc:
            raise ApiError(403, "forbidden", str(exc)) from None

    def paging(self) -> tuple[int, int]:
        limit = _int_query(self.query, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _int_query(self.query, "offset", 0, 0, 10**9)
        return limit, offset

    def visible_zone_filter(self, column: str) -> tuple[str, list[Any]]:
        zones = visible_zones(self.principal, self.app.zones)
        if zones is None:
            return "1=1", []
        if not zones:
            return "0=1", []
        return f"{column} IN ({','.join('?' * len(zones))})", sorted(zones)


def _int_query(query: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
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
    from datetime import datetime
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, "bad_query", f"{name!r} must be an ISO 8601 date/time or Unix seconds") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _ident(value: str, what: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise ApiError(400, "bad_id", f"{what} must be letters, digits, '-', '_' or '.' (at most 64), got {value!r}")
    return value


Handler = Callable[[Call], "tuple[int, Any] | Deferred[tuple[int, Any]]"]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    public: bool = False
    pattern: re.Pattern[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.path) + "$"
        object.__setattr__(self, "pattern", re.compile(regex))


# --- handlers ------------------------------------------------------------------

def openapi(call: Call) -> tuple[int, Any]:
    return 200, OPENAPI


def me(call: Call) -> tuple[int, Any]:
    p = call.principal
    return 200, {"name": p.name, "role": p.role, "zones": list(p.zones)}


def list_zones(call: Call) -> tuple[int, Any]:
    where, args = call.visible_zone_filter("id")
    limit, offset = call.paging()
    return 200, call.app.storage.page(f"SELECT id, name, kind, parent FROM zones WHERE {where} ORDER BY id",
                                      args, limit, offset).as_dict()


def create_zone(call: Call) -> tuple[int, Any]:
    call.authorize(Action.PROVINCE)
    body = call.body({"id": (str, True), "name": (str, True), "kind": (str, True), "parent": (str, False)})
    zone_id = _ident(body["id"], "id")
    if body["kind"] not in ZONE_KINDS:
        raise ApiError(400, "bad_value", f"kind must be one of {', '.join(ZONE_KINDS)}")
    parent = body.get("parent")
    if parent is not None and parent not in call.app.zones:
        raise ApiError(400, "bad_reference", f"no zone {parent!r}")
    with call.app.storage.transaction() as db:
        db.execute("INSERT INTO zones (id, name, kind, parent) VALUES (?,?,?,?)",
                   (zone_id, body["name"], body["kind"], parent))
        call.app.storage.audit(db, call.principal.name, "zone.create", zone_id, zone_id, call.remote)
    call.app.reload_zones()
    return 201, {"id": zone_id, "name": body["name"], "kind": body["kind"], "parent": parent}


def list_channels(call: Call) -> tuple[int, Any]:
    where, args = call.visible_zone_filter("zone")
    limit, offset = call.paging()
    page = call.app.storage.page(f"SELECT id FROM channels WHERE {where} ORDER BY id", args, limit, offset)
    page.items[:] = [call.app.describe_channel(call.app.channels[r["id"]]) for r in page.items
                     if r["id"] in call.app.channels]
    return 200, page.as_dict()


def get_channel(call: Call) -> tuple[int, Any]:
    channel = call.app.channels.get(call.params["id"])
    if channel is None:
        raise ApiError(404, "not_found", f"no channel {call.params['id']!r}")
    call.authorize(Action.READ, channel.config.zone)
    return 200, call.app.describe_channel(channel)


def create_channel(call: Call) -> tuple[int, Any]:
    call.authorize(Action.PROVINCE)
    body = call.body({"id": (str, True), "name": (str, True), "zone": (str, True), "public": (bool, False)})
    channel_id = _ident(body["id"], "id")
    if body["zone"] not in call.app.zones:
        raise ApiError(400, "bad_reference", f"no zone {body['zone']!r}")
    with call.app.storage.transaction() as db:
        db.execute("INSERT INTO channels (id, name, zone, public) VALUES (?,?,?,?)",
                   (channel_id, body["name"], body["zone"], int(body.get("public", True))))
        call.app.storage.audit(db, call.principal.name, "channel.create", channel_id, body["zone"], call.remote)
    call.app.reload_channels()
    return 201, call.app.describe_channel(call.app.channels[channel_id])


def _speaker_row(call: Call, speaker_id: str) -> dict[str, Any]:
    rows = call.app.storage.query("SELECT id, name, zone, channel, volume, created_at FROM loudspeakers WHERE id = ?",
                                  (speaker_id,))
    if not rows:
        raise ApiError(404, "not_found", f"no loudspeaker {speaker_id!r}")
    return rows[0]


def _speaker_view(call: Call, row: dict[str, Any]) -> dict[str, Any]:
    subscription = call.app.subscriptions.subscriptions.get(row["id"])
    view = dict(row)
    view["online"] = subscription is not None
    view["last_heartbeat"] = subscription.last_seen if subscription else None
    view["address"] = f"{subscription.address[0]}:{subscription.address[1]}" if subscription else None
    view["status"] = subscription.status.as_dict() if subscription else None
    return view


def list_speakers(call: Call) -> tuple[int, Any]:
    where, args = call.visible_zone_filter("zone")
    filters, extra = [where], list(args)
    for column in ("zone", "channel"):
        if call.query.get(column):
            filters.append(f"{column} = ?")
            extra.append(call.query[column])
    limit, offset = call.paging()
    page = call.app.storage.page(
        "SELECT id, name, zone, channel, volume, created_at FROM loudspeakers WHERE "
        + " AND ".join(filters) + " ORDER BY id", extra, limit, offset)
    page.items[:] = [_speaker_view(call, r) for r in page.items]
    return 200, page.as_dict()


def get_speaker(call: Call) -> tuple[int, Any]:
    row = _speaker_row(call, call.params["id"])
    call.authorize(Action.READ, row["zone"])
    return 200, _speaker_view(call, row)


def _check_channel_for_zone(call: Call, channel_id: str, zone: str) -> None:
    channel = call.app.channels.get(channel_id)
    if channel is None:
        raise ApiError(400, "bad_reference", f"no channel {channel_id!r}")
    call.authorize(Action.WRITE, channel.config.zone)


def _new_key(given: str | None) -> str:
    if given is None:
        return secrets.token_hex(32)
    if len(given.encode("utf-8")) < MIN_KEY_LENGTH:
        raise ApiError(400, "bad_value", f"key must be at least {MIN_KEY_LENGTH} bytes")
    return given


def create_speaker(call: Call) -> tuple[int, Any]:
    body = call.body({"id": (str, True), "zone": (str, True), "channel": (str, True), "name": (str, False),
                      "volume": (int, False), "key": (str, False)})
    speaker_id = _ident(body["id"], "id")
    if body["zone"] not in call.app.zones:
        raise ApiError(400, "bad_reference", f"no zone {body['zone']!r}")
    call.authorize(Action.WRITE, body["zone"])
    _check_channel_for_zone(call, body["channel"], body["zone"])
    volume = _volume(body.get("volume", 80))
    key = _new_key(body.get("key"))
    with call.app.storage.transaction() as db:
        if db.execute("SELECT 1 FROM loudspeakers WHERE id = ?", (speaker_id,)).fetchone():
            raise ApiError(409, "exists", f"loudspeaker {speaker_id!r} is already registered")
        db.execute("INSERT INTO loudspeakers (id, name, zone, channel, key_sealed, volume, created_at) "
                   "VALUES (?,?,?,?,?,?,?)", (speaker_id, body.get("name", ""), body["zone"], body["channel"],
                                              call.app.storage.sealer.seal(speaker_id, key.encode("utf-8")),
                                              volume, time.time()))
        call.app.storage.audit(db, call.principal.name, "loudspeaker.register", speaker_id, body["zone"],
                               call.remote, f"channel={body['channel']}")
    call.app.reload_devices()
    view = _speaker_view(call, _speaker_row(call, speaker_id))
    view["key"] = key  # shown once; only its sealed form is stored
    return 201, view


def _volume(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
        raise ApiError(400, "bad_value", "volume must be an integer from 0 to 100")
    return value


def update_speaker(call: Call) -> tuple[int, Any]:
    row = _speaker_row(call, call.params["id"])
    call.authorize(Action.WRITE, row["zone"])
    body = call.body({"channel": (str, False), "volume": (int, False), "name": (str, False)})
    changes: dict[str, Any] = {}
    if "channel" in body:
        _check_channel_for_zone(call, body["channel"], row["zone"])
        changes["channel"] = body["channel"]
    if "volume" in body:
        changes["volume"] = _volume(body["volume"])
    if "name" in body:
        changes["name"] = body["name"]
    if changes:
        with call.app.storage.transaction() as db:
            db.execute(f"UPDATE loudspeakers SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                       (*changes.values(), row["id"]))
            call.app.storage.audit(db, call.principal.name, "loudspeaker.update", row["id"], row["zone"],
                                   call.remote, json.dumps(changes, ensure_ascii=False))
        call.app.reload_devices()
    return 200, _speaker_view(call, _speaker_row(call, row["id"]))


def rotate_key(call: Call) -> tuple[int, Any]:
    row = _speaker_row(call, call.params["id"])
    call.authorize(Action.WRITE, row["zone"])
    key = secrets.token_hex(32)
    with call.app.storage.transaction() as db:
        db.execute("UPDATE loudspeakers SET key_sealed = ? WHERE id = ?",
                   (call.app.storage.sealer.seal(row["id"], key.encode("utf-8")), row["id"]))
        call.app.storage.audit(db, call.principal.name, "loudspeaker.rotate_key", row["id"], row["zone"],
                               call.remote)
    call.app.reload_devices()
    return 200, {"id": row["id"], "key": key}


def delete_speaker(call: Call) -> tuple[int, Any]:
    row = _speaker_row(call, call.params["id"])
    call.authorize(Action.WRITE, row["zone"])
    with call.app.storage.transaction() as db:
        db.execute("DELETE FROM loudspeakers WHERE id = ?", (row["id"],))
        call.app.storage.audit(db, call.principal.name, "loudspeaker.delete", row["id"], row["zone"], call.remote)
    call.app.reload_devices()
    return 204, None


MEDIA_COLUMNS = "id, zone, title, filename, duration_s, loudness_lufs, original_lufs, sha256, size_bytes, " \
                "uploaded_by, created_at"


def list_media(call: Call) -> tuple[int, Any]:
    where, args = call.visible_zone_filter("zone")
    limit, offset = call.paging()
    return 200, call.app.storage.page(f"SELECT {MEDIA_COLUMNS} FROM media WHERE {where} ORDER BY created_at DESC",
                                      args, limit, offset).as_dict()


def _media_row(call: Call) -> dict[str, Any]:
    rows = call.app.storage.query(f"SELECT {MEDIA_COLUMNS}, path FROM media WHERE id = ?", (call.params["id"],))
    if not rows:
        raise ApiError(404, "not_found", f"no media item {call.params['id']!r}")
    return rows[0]


def get_media(call: Call) -> tuple[int, Any]:
    row = _media_row(call)
    call.authorize(Action.READ, row["zone"])
    row.pop("path")
    return 200, row


def upload_media(call: Call) -> Deferred[tuple[int, Any]]:
    from broadcaster.control.media import (  # scipy: slow to import, rarely used
        MediaError,
        ProcessedMedia,
        process_upload,
    )

    zone = call.query.get("zone", "")
    title = call.query.get("title", "").strip()
    filename = call.query.get("filename", title or "upload")
    if zone not in call.app.zones:
        raise ApiError(400, "bad_reference", f"query parameter 'zone' must name a zone, got {zone!r}")
    if not title:
        raise ApiError(400, "missing_field", "query parameter 'title' is required")
    call.authorize(Action.WRITE, zone)
    settings = call.app.config.storage
    if getattr(call.request, "too_large", False):
        metrics.uploads_rejected_total.labels("too_large").inc()
        raise ApiError(413, "too_large", f"uploads are limited to {settings.max_upload_bytes} bytes")
    data = call.request.content.read() if call.request.content else b""
    media_id = uuid.uuid4().hex
    path = settings.media_dir / f"{media_id}.flac"
    # Decoding and loudness analysis take seconds: never on the reactor thread,
    # or every channel would stall for as long.
    work = deferToThreadPool(call.app.reactor, call.app.reactor.getThreadPool(), process_upload, data,
                             filename=filename, out_path=path, max_bytes=settings.max_upload_bytes,
                             target_lufs=settings.loudness_target_lufs,
                             max_duration_s=settings.max_upload_duration_s)

    def stored(result: ProcessedMedia) -> tuple[int, Any]:  # noqa: F821
        try:
            with call.app.storage.transaction() as db:
                db.execute("INSERT INTO media (id, zone, title, filename, path, duration_s, loudness_lufs, "
                           "original_lufs, sha256, size_bytes, uploaded_by, created_at) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                           (media_id, zone, title, filename, str(path), result.duration_s, result.loudness_lufs,
                            result.original_lufs, result.sha256, result.size_bytes, call.principal.name,
                            time.time()))
                call.app.storage.audit(db, call.principal.name, "media.upload", media_id, zone, call.remote, title)
        except BaseException:
            path.unlink(missing_ok=True)  # nothing stored half-way
            raise
        call.params["id"] = media_id
        _, view = get_media(call)
        return 201, view

    def refused(failure: Failure) -> Failure:
        if failure.check(MediaError):
            exc = failure.value
            metrics.uploads_rejected_total.labels(exc.code).inc()
            raise ApiError(413 if exc.code == "too_large" else 422, exc.code, exc.message)
        return failure

    return work.addCallbacks(stored, refused)


def delete_media(call: Call) -> tuple[int, Any]:
    row = _media_row(call)
    call.authorize(Action.WRITE, row["zone"])
    with call.app.storage.transaction() as db:
        db.execute("DELETE FROM media WHERE id = ?", (row["id"],))
        call.app.storage.audit(db, call.principal.name, "media.delete", row["id"], row["zone"], call.remote)
    from pathlib import Path
    Path(row["path"]).unlink(missing_ok=True)
    return 204, None


def _log_query(call: Call, table: str, columns: str, time_column: str, zone_column: str) -> tuple[int, Any]:
    where, args = call.visible_zone_filter(zone_column)
    filters, extra = [where], list(args)
    if call.query.get("zone"):
        zone = call.query["zone"]
        call.authorize(Action.READ, zone)
        subtree = sorted(call.app.zones.subtree(zone))
        filters.append(f"{zone_column} IN ({','.join('?' * len(subtree))})")
        extra += subtree
    for name, op in (("from", ">="), ("to", "<")):
        if call.query.get(name):
            filters.append(f"{time_column} {op} ?")
            extra.append(time_query(call.query, name, 0.0))
    limit, offset = call.paging()
    return 200, call.app.storage.page(f"SELECT {columns} FROM {table} WHERE {' AND '.join(filters)} "
                                      f"ORDER BY {time_column} DESC, id DESC", extra, limit, offset).as_dict()


def list_broadcasts(call: Call) -> tuple[int, Any]:
    call.app.storage.flush()
    return _log_query(call, "broadcast_log", "id, channel, zone, kind, item, started_at, ended_at, started_by, "
                      "outcome, detail", "started_at", "zone")


def list_audit(call: Call) -> tuple[int, Any]:
    return _log_query(call, "audit_log", "id, at, actor, action, target, zone, remote, detail", "at", "zone")


def report(call: Call) -> tuple[int, Any]:
    zone = call.query.get("zone") or next((z for z, p in call.app.zones.parents.items() if p is None), "")
    if zone not in call.app.zones:
        raise ApiError(400, "bad_reference", f"no zone {zone!r}")
    call.authorize(Action.READ, zone)
    now = time.time()
    start = time_query(call.query, "from", now - 365 * 86400)
    end = time_query(call.query, "to", now)
    if end <= start:
        raise ApiError(400, "bad_query", "'to' must be after 'from'")
    fmt = call.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, "bad_query", "format must be json or csv")
    call.app.storage.flush()
    result = broadcast_report(call.app.storage, call.app.zones, zone, start, end, now=now)
    if fmt == "csv":
        call.request.setHeader(b"Content-Disposition", b'attachment; filename="broadcast-report.csv"')
        return 200, ("text/csv; charset=utf-8", report_csv(result))
    return 200, result


PROGRAMME_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "title": (str, True), "zones": (list, True), "media": (list, True), "start": (str, True),
    "recurrence": (str, False), "weekdays": (list, False), "until": (str, False), "duration_s": ((int, float), False),
    "on_restart": (str, False), "on_preempt": (str, False), "priority": ((str, int), False)}


def _programme_view(call: Call, row: dict[str, Any]) -> dict[str, Any]:
    view = dict(row)
    for name in ("zones", "media", "weekdays"):
        view[name] = json.loads(view[name])
    programme = call.app.schedule.get(row["id"])
    now = call.app.wall()
    view["channels"] = list(programme.channels) if programme else []
    view["next"] = [o.start for o in call.app.schedule.occurrences(now, now + 8 * 86400)
                    if o.programme.id == row["id"]][:5]
    return view


def list_programmes(call: Call) -> tuple[int, Any]:
    visible = visible_zones(call.principal, call.app.zones)
    rows = call.app.storage.query("SELECT * FROM programmes ORDER BY start_local, id")
    rows = [r for r in rows if visible is None or set(json.loads(r["zones"])) <= visible]
    limit, offset = call.paging()
    return 200, {"items": [_programme_view(call, r) for r in rows[offset:offset + limit]], "total": len(rows),
                 "limit": limit, "offset": offset}


def _programme_row(call: Call) -> dict[str, Any]:
    rows = call.app.storage.query("SELECT * FROM programmes WHERE id = ?", (call.params["id"],))
    if not rows:
        raise ApiError(404, "not_found", f"no programme {call.params['id']!r}")
    call.authorize(Action.READ, *json.loads(rows[0]["zones"]))
    return rows[0]


def get_programme(call: Call) -> tuple[int, Any]:
    return 200, _programme_view(call, _programme_row(call))


def create_programme(call: Call) -> tuple[int, Any]:
    from datetime import date, datetime

    from broadcaster.control.programmes import PRIORITY_NAMES
    from broadcaster.control.schedule import Clash, Programme, ScheduleError

    body = call.body(PROGRAMME_FIELDS)
    zones, media = body["zones"], body["media"]
    if not zones or not all(isinstance(z, str) and z in call.app.zones for z in zones):
        raise ApiError(400, "bad_reference", "zones must be a non-empty list of zone ids")
    call.authorize(Action.WRITE, *zones)
    if not media or not all(isinstance(m, str) for m in media):
        raise ApiError(400, "bad_value", "media must be a non-empty list of media ids")
    found = {r["id"]: r for r in call.app.storage.query(
        f"SELECT id, zone, duration_s FROM media WHERE id IN ({','.join('?' * len(media))})", media)}
    missing = [m for m in media if m not in found]
    if missing:
        raise ApiError(400, "bad_reference", f"no media item {missing[0]!r}")
    call.authorize(Action.READ, *{found[m]["zone"] for m in media})
    channels = call.app.channels_in(zones)
    if not channels:
        raise ApiError(400, "bad_reference", "the zones have no channel to play on")
    priority = body.get("priority", "normal")
    if isinstance(priority, str):
        if priority not in PRIORITY_NAMES:
            raise ApiError(400, "bad_value", f"priority must be one of {', '.join(PRIORITY_NAMES)}")
        priority = int(PRIORITY_NAMES[priority])
    elif priority not in (10, 20):
        raise ApiError(400, "bad_value", "a scheduled programme's priority class is 10 (background) or 20 (normal)")
    try:
        start = datetime.fromisoformat(body["start"])
        until = date.fromisoformat(body["until"]) if body.get("until") else None
    except ValueError:
        raise ApiError(400, "bad_value", "start is a local date and time (2026-12-01T06:00), until a date") from None
    if start.tzinfo is not None:
        raise ApiError(400, "bad_value", f"start is local time in {call.app.config.schedule.timezone}; "
                       "give it without an offset")
    duration = float(body.get("duration_s") or sum(found[m]["duration_s"] for m in media))
    on_preempt = body.get("on_preempt", "pause")
    if on_preempt not in ("pause", "skip"):
        raise ApiError(400, "bad_value", "on_preempt is pause (resume where it stopped) or skip")
    programme = Programme(id="p-" + uuid.uuid4().hex[:10], title=body["title"], channels=channels, start=start,
                          duration_s=duration, recurrence=body.get("recurrence", "once"),
                          weekdays=tuple(body.get("weekdays") or ()), until=until, priority=priority,
                          on_restart=body.get("on_restart", "resume"))
    try:
        call.app.schedule.add(programme)
    except Clash as exc:
        raise ApiError(409, "clash", str(exc)) from None
    except ScheduleError as exc:
        raise ApiError(400, "bad_value", str(exc)) from None
    try:
        with call.app.storage.transaction() as db:
            db.execute("INSERT INTO programmes (id, title, zones, media, start_local, duration_s, recurrence, "
                       "weekdays, until, priority, on_restart, on_preempt, created_by, created_at) "
                       "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (programme.id, programme.title, json.dumps(zones), json.dumps(media), start.isoformat(),
                        duration, programme.recurrence, json.dumps(list(programme.weekdays)),
                        until.isoformat() if until else None, priority, programme.on_restart, on_preempt,
                        call.principal.name, time.time()))
            call.app.storage.audit(db, call.principal.name, "programme.create", programme.id, zones[0], call.remote,
                                   f"{programme.title} {programme.recurrence} {start.isoformat()}")
    except BaseException:
        call.app.schedule.remove(programme.id)
        raise
    call.params["id"] = programme.id
    return 201, _programme_view(call, _programme_row(call))


def delete_programme(call: Call) -> tuple[int, Any]:
    row = _programme_row(call)
    call.authorize(Action.WRITE, *json.loads(row["zones"]))
    with call.app.storage.transaction() as db:
        db.execute("DELETE FROM programmes WHERE id = ?", (row["id"],))
        call.app.storage.audit(db, call.principal.name, "programme.delete", row["id"], json.loads(row["zones"])[0],
                               call.remote, row["title"])
    call.app.schedule.remove(row["id"])
    return 204, None


ALERT_FIELDS: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "title": (str, True), "zones": (list, True), "text": (str, False), "media": (str, False),
    "language": (str, False), "priority": ((str, int), False), "policy": (str, False), "repeat": (int, False),
    "gap_s": ((int, float), False), "volume": (int, False)}


def _authorize_alert(call: Call, zones: list[str]) -> None:
    if call.principal.role != "admin" and not call.app.config.alerts.operators_may_alert:
        raise ApiError(403, "forbidden", "only the province (admin) may send alerts on this server "
                       "(alerts.operators_may_alert is off)")
    call.authorize(Action.WRITE, *zones)


def _start_alert(call: Call, *, title: str, zones: list[str], text: str, media_id: str | None, language: str,
                 priority: Any, policy: str, repeat: int, gap_s: float, volume: int,
                 cap_identifier: str | None = None) -> dict[str, Any]:
    from broadcaster.core.mixer import PRIORITY_NAMES, Priority

    if not zones or not all(isinstance(z, str) and z in call.app.zones for z in zones):
        raise ApiError(400, "bad_reference", "zones must be a non-empty list of zone ids")
    _authorize_alert(call, zones)
    if isinstance(priority, str):
        level = PRIORITY_NAMES.get(priority)
    else:
        level = Priority(priority) if priority in (40, 50) else None
    if level not in (Priority.ANNOUNCEMENT, Priority.EMERGENCY):
        raise ApiError(400, "bad_value", "priority is emergency (khan-cap, 50) or announcement (uu-tien, 40)")
    if policy not in ("preempt", "duck"):
        raise ApiError(400, "bad_value", "policy is preempt or duck")
    if not 1 <= repeat <= 20 or not 0 <= gap_s <= 600 or not 0 <= volume <= 100:
        raise ApiError(400, "bad_value", "repeat is 1..20, gap_s 0..600, volume 0..100")
    media_path = None
    if media_id:
        rows = call.app.storage.query("SELECT path, zone FROM media WHERE id = ?", (media_id,))
        if not rows:
            raise ApiError(400, "bad_reference", f"no media item {media_id!r}")
        call.authorize(Action.READ, rows[0]["zone"])
        media_path = rows[0]["path"]  # decoded in a worker while the attention signal plays
    elif not text.strip():
        raise ApiError(400, "missing_field", "give 'text' to read aloud or 'media' to play")
    if len(text) > 5000:
        raise ApiError(400, "bad_value", "text is limited to 5,000 characters")
    channels = list(call.app.channels_in(zones))
    if not channels:
        raise ApiError(400, "bad_reference", "the zones have no channel")
    alert = call.app.alerts.start(title=title, zones=zones, channels=channels, priority=level, policy=policy,
                                  repeat=repeat, gap_s=gap_s, created_by=call.principal.name, volume=volume,
                                  text=text, media_path=media_path, media_id=media_id, language=language,
                                  cap_identifier=cap_identifier,
                                  audit=(call.principal.name, call.remote,
                                         f"{level.name.lower()} {title} zones={','.join(zones)}"))
    return call.app.alerts.describe(alert)


def create_alert(call: Call) -> tuple[int, Any]:
    settings = call.app.config.alerts
    body = call.body(ALERT_FIELDS)
    return 201, _start_alert(call, title=body["title"], zones=body["zones"], text=body.get("text", ""),
                             media_id=body.get("media"), language=body.get("language", "vi"),
                             priority=body.get("priority", "emergency"), policy=body.get("policy", "preempt"),
                             repeat=body.get("repeat", settings.repeat), gap_s=float(body.get("gap_s", settings.gap_s)),
                             volume=body.get("volume", settings.volume))


def create_cap_alert(call: Call) -> tuple[int, Any]:
    from broadcaster.control.cap import CapError, parse_cap, priority_of, spoken_text, zones_for

    raw = call.request.content.read(1024 * 1024 + 1) if call.request.content else b""
    try:
        message = parse_cap(raw)
        if message.status == "Test":
            raise CapError("unsupported", "status Test: CAP says all recipients disregard it; nothing plays")
        referenced = [a for sender, identifier, _sent in message.references
                      for a in call.app.alerts.active.values() if a.cap_identifier == f"{sender},{identifier}"]
        for alert in referenced:
            _authorize_alert(call, alert.zones)  # all checked before anything is cancelled
        if message.msg_type == "Cancel":
            cancelled = []
            for alert in referenced:
                call.app.alerts.cancel(alert.id, call.principal.name)
                cancelled.append(alert.id)
            if not cancelled:
                raise ApiError(404, "not_found", "no alert on air matches the message's references")
            with call.app.storage.transaction() as db:
                call.app.storage.audit(db, call.principal.name, "alert.cancel", ",".join(cancelled), None,
                                       call.remote, f"CAP {message.identifier}")
            return 200, {"cancelled": cancelled}
        if message.scope != "Public":
            raise CapError("unsupported", f"scope {message.scope!r}: only Public messages go to public loudspeakers")
        info = message.info_for()
        zones = zones_for(info, dict(call.app.config.alerts.cap_areas))
    except CapError as exc:
        metrics.cap_rejected_total.labels(exc.code).inc()
        raise ApiError(413 if exc.code == "too_large" else 400, exc.code, str(exc)) from None
    settings = call.app.config.alerts
    priority = priority_of(info)
    for alert in referenced:  # an Update replaces what it refers to
        call.app.alerts.cancel(alert.id, call.principal.name)
    return 201, _start_alert(call, title=info.headline or info.event, zones=zones, text=spoken_text(message, info),
                             media_id=None, language="vi" if info.language.lower().startswith("vi") else "en",
                             priority=priority, policy="preempt",
                             repeat=settings.repeat if priority == "emergency" else 1,
                             gap_s=settings.gap_s, volume=settings.volume,
                             cap_identifier=f"{message.sender},{message.identifier}")


def list_alerts(call: Call) -> tuple[int, Any]:
    visible = visible_zones(call.principal, call.app.zones)
    items = [call.app.alerts.describe(a) for a in call.app.alerts.active.values()
             if visible is None or set(a.zones) <= visible]
    return 200, {"items": items, "total": len(items), "limit": len(items), "offset": 0}


def get_alert(call: Call) -> tuple[int, Any]:
    alert = call.app.alerts.active.get(call.params["id"]) or call.app.alerts.recent.get(call.params["id"])
    if alert is None:
        raise ApiError(404, "not_found", f"no alert {call.params['id']!r} (the broadcast log has past ones)")
    call.authorize(Action.READ, *alert.zones)
    return 200, call.app.alerts.describe(alert)


def cancel_alert(call: Call) -> tuple[int, Any]:
    alert = call.app.alerts.active.get(call.params["id"])
    if alert is None:
        raise ApiError(404, "not_found", f"no alert {call.params['id']!r} on air")
    _authorize_alert(call, alert.zones)
    call.app.alerts.cancel(alert.id, call.principal.name)
    with call.app.storage.transaction() as db:
        call.app.storage.audit(db, call.principal.name, "alert.cancel", alert.id, alert.zones[0], call.remote)
    return 200, call.app.alerts.describe(alert)


ROUTES: list[Route] = [
    Route("GET", "/api/v1/openapi.json", openapi, public=True),
    Route("GET", "/api/v1/me", me),
    Route("GET", "/api/v1/zones", list_zones),
    Route("POST", "/api/v1/zones", create_zone),
    Route("GET", "/api/v1/channels", list_channels),
    Route("POST", "/api/v1/channels", create_channel),
    Route("GET", "/api/v1/channels/{id}", get_channel),
    Route("GET", "/api/v1/loudspeakers", list_speakers),
    Route("POST", "/api/v1/loudspeakers", create_speaker),
    Route("GET", "/api/v1/loudspeakers/{id}", get_speaker),
    Route("PATCH", "/api/v1/loudspeakers/{id}", update_speaker),
    Route("DELETE", "/api/v1/loudspeakers/{id}", delete_speaker),
    Route("POST", "/api/v1/loudspeakers/{id}/rotate-key", rotate_key),
    Route("GET", "/api/v1/media", list_media),
    Route("POST", "/api/v1/media", upload_media),
    Route("GET", "/api/v1/media/{id}", get_media),
    Route("DELETE", "/api/v1/media/{id}", delete_media),
    Route("GET", "/api/v1/programmes", list_programmes),
    Route("POST", "/api/v1/programmes", create_programme),
    Route("GET", "/api/v1/programmes/{id}", get_programme),
    Route("DELETE", "/api/v1/programmes/{id}", delete_programme),
    Route("GET", "/api/v1/alerts", list_alerts),
    Route("POST", "/api/v1/alerts", create_alert),
    Route("POST", "/api/v1/alerts/cap", create_cap_alert),
    Route("GET", "/api/v1/alerts/{id}", get_alert),
    Route("POST", "/api/v1/alerts/{id}/cancel", cancel_alert),
    Route("GET", "/api/v1/broadcasts", list_broadcasts),
    Route("GET", "/api/v1/audit", list_audit),
    Route("GET", "/api/v1/reports/broadcast", report),
]

OPENAPI: dict[str, Any] = json.loads(resources.files("broadcaster.api").joinpath("openapi.json").read_text("utf-8"))


class AdminApi(Resource):
    isLeaf = True

    def __init__(self, app: BroadcastServer) -> None:
        super().__init__()
        self.app = app

    def render(self, request: Request) -> bytes | int:
        outcome = self._dispatch(request)
        if not isinstance(outcome, Deferred):
            return self._write(request, *outcome)

        def done(result: tuple[int, Any, str | None]) -> None:
            if not request.finished and not request._disconnected:
                request.write(self._write(request, *result))
                request.finish()

        outcome.addCallbacks(self._shape, self._failed).addCallback(done)
        return NOT_DONE_YET

    def _shape(self, result: tuple[int, Any]) -> tuple[int, Any, str | None]:
        status, body = result
        if isinstance(body, tuple):
            return status, body[1], body[0]
        return status, body, None

    def _failed(self, failure: Failure) -> tuple[int, Any, str | None]:
        if failure.check(ApiError):
            exc = failure.value
            return exc.status, {"error": {"code": exc.code, "message": exc.message}}, None
        log.error("API request failed: %s", failure.getTraceback())
        return 500, {"error": {"code": "internal", "message": "the server failed; the error is in its log"}}, None

    def _write(self, request: Request, status: int, body: Any, content_type: str | None) -> bytes:
        metrics.http_requests_total.labels("api", str(status)).inc()
        request.setResponseCode(status)
        if status == 204:
            return b""
        if content_type is None:
            request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
            return json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8")
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        return str(body).encode("utf-8")

    def _dispatch(self, request: Request) -> tuple[int, Any, str | None] | Deferred[tuple[int, Any]]:
        path = request.path.decode("utf-8", "replace").rstrip("/")
        method = request.method.decode("ascii", "replace")
        try:
            matches = [(r, m) for r in ROUTES if (m := r.pattern.match(path))]
            if not matches:
                raise ApiError(404, "not_found", f"no API route {path!r}; see /api/v1/openapi.json")
            route_match = next(((r, m) for r, m in matches if r.method == method), None)
            if route_match is None:
                allowed = ", ".join(sorted({r.method for r, _ in matches}))
                request.setHeader(b"Allow", allowed.encode("ascii"))
                raise ApiError(405, "method_not_allowed", f"{method} is not allowed here; use {allowed}")
            route, match = route_match
            principal = self._authenticate(request, route)
            args: dict[bytes, list[bytes]] = request.args or {}
            query = {k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace") for k, v in args.items() if v}
            result = route.handler(Call(request, principal, dict(match.groupdict()), query, self.app))
            if isinstance(result, Deferred):
                return result
            return self._shape(result)
        except ApiError as exc:
            if exc.status == 401:
                request.setHeader(b"WWW-Authenticate", b'Bearer realm="broadcaster"')
            return exc.status, {"error": {"code": exc.code, "message": exc.message}}, None
        except Conflict as exc:
            message = f"the change conflicts with stored data: {exc}"
            return 409, {"error": {"code": "conflict", "message": message}}, None

    def _authenticate(self, request: Request, route: Route) -> Principal:
        remote = getattr(request.getClientAddress(), "host", None)
        if route.public:
            return Principal(name="anonymous", role="viewer", remote=remote)
        header = (request.getHeader("authorization") or "").strip()
        if not header.lower().startswith("bearer "):
            raise ApiError(401, "unauthenticated", "send 'Authorization: Bearer <token>' (broadcaster user token)")
        user = self.app.storage.user_by_token(header[7:].strip())
        if user is None:
            metrics.auth_failures_total.labels("api").inc()
            raise ApiError(401, "unauthenticated", "the token is not valid")
        return Principal.from_row(user, remote)
