"""THE mapping between our records and the link's wire JSON (docs/source-system.md).

Everything that crosses the province link is built and read here, and only
here: the bulletin feed (upstream -> downstream), and the report (plays,
loudspeaker inventory, daily figures; downstream -> upstream). The national
guidance (CV 2455/BTTTT-TTCS v2.0, CV 5616/BTTTT-TTCS) defines the real
fields, which we could not obtain; adapting a vendor's national system means
changing the names and conversions in this module, and nothing else.

Reading is tolerant where it can be and strict where it must be: unknown
fields are ignored (a newer peer may send more), and each bulletin, play,
loudspeaker or day is validated on its own, so one bad item is counted and
skipped with its reason while the rest of the batch is taken. Times on the
wire are ISO 8601 in UTC (``2026-12-02T01:30:00Z``); our records keep Unix
seconds. Pure: no I/O, no clock (``now`` is an argument where it matters).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROTOCOL = 1
MAX_BULLETINS = 500       # in one feed document
MAX_PLAYS = 500           # in one report
MAX_LOUDSPEAKERS = 5000   # in one report's inventory (a commune has tens to hundreds)
MAX_DAYS = 62             # in one report

# Our bulletin classes and their names on the wire (the three of Circular 39/2020; a vendor's codes go here).
CLASS_TO_WIRE = {"thong-thuong": "thong-thuong", "uu-tien": "uu-tien", "khan-cap": "khan-cap"}
CLASS_FROM_WIRE = {v: k for k, v in CLASS_TO_WIRE.items()}
# Which of our bulletin states the feed carries, and as what.
ACTIVE_STATES = ("approved", "scheduled", "played")
WITHDRAWN_STATES = ("withdrawn", "rejected")


class WireError(ValueError):
    """A document or item that cannot be read; the message names the key path."""


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    spec = "seconds" if float(t).is_integer() else "milliseconds"
    return datetime.fromtimestamp(t, UTC).isoformat(timespec=spec).replace("+00:00", "Z")


def unix(text: str | None, key: str) -> float | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        raise WireError(f"{key}: expected an ISO 8601 time such as 2026-12-02T01:30:00Z, got {text!r}") from None
    if parsed.tzinfo is None:
        raise WireError(f"{key}: the time {text!r} has no UTC offset")
    return parsed.timestamp()


def _message(exc: ValidationError, where: str) -> str:
    first = exc.errors()[0]
    path = ".".join(str(p) for p in first["loc"])
    return f"{where}.{path}: {first['msg']}" if path else f"{where}: {first['msg']}"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


# --- bulletins: upstream -> downstream ---------------------------------------------------------

class WirePlan(_Wire):
    """When to play; the same shape as our bulletin plan (local times in the feed's ``timezone``)."""

    at: list[str] = Field(default_factory=list, max_length=50)
    times: list[str] = Field(default_factory=list, max_length=50)
    weekdays: list[int] = Field(default_factory=list, max_length=7)
    monthdays: list[int] = Field(default_factory=list, max_length=31)
    asap: bool = False
    repeat: int = Field(1, ge=1, le=10)
    gap_s: float = Field(0, ge=0, le=7200)


class WireAudio(_Wire):
    """A bulletin's recording: fetched by the downstream from ``{its upstream url}/{path}`` with a signed
    GET (never from anywhere else; the reply is signed, so its bytes are the upstream's). ``id`` names the
    recording upstream: the same id is fetched once."""

    path: str = Field(pattern=r"^media/[A-Za-z0-9_.-]{1,128}$")
    id: str = Field(min_length=1, max_length=128)
    duration_s: float | None = Field(None, ge=0)


class WireBulletin(_Wire):
    id: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=1)
    state: Literal["active", "withdrawn"]
    title: str = Field("", max_length=300)
    summary: str = Field("", max_length=4000)
    body: str = Field("", max_length=100_000)
    category: str = Field("", max_length=100)
    klass: str = Field("thong-thuong", alias="class")
    language: str = Field("vi", pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    valid_from: str | None = None
    valid_until: str | None = None
    areas: list[str] = Field(default_factory=list, max_length=500)
    plan: WirePlan = Field(default_factory=lambda: WirePlan.model_validate({}))
    audio: WireAudio | None = None


@dataclass(frozen=True)
class Bulletin:
    """A bulletin as the downstream reads it from the feed."""

    upstream_id: str
    version: int
    withdrawn: bool
    title: str
    summary: str
    body: str
    category: str
    klass: str
    language: str
    valid_from: float | None
    valid_until: float | None
    areas: tuple[str, ...]
    plan: dict[str, Any]
    audio: WireAudio | None = None

    @property
    def digest(self) -> str:
        """What the downstream compares to decide whether anything changed (beside the version)."""
        return f"{self.version}:{'withdrawn' if self.withdrawn else 'active'}"


def bulletin_to_wire(row: Mapping[str, Any], areas: Iterable[str]) -> dict[str, Any]:
    """One of our bulletin rows (storage.bulletins) for the feed, with its area codes for this downstream.
    A row with ``media`` (its own recording, not its rendered speech) carries it as ``audio``."""
    state = row["state"]
    plan = row["plan"] if isinstance(row["plan"], dict) else json.loads(row["plan"] or "{}")
    return {
        "id": row["id"],
        "version": int(row["version"]),
        "state": "active" if state in ACTIVE_STATES else "withdrawn",
        "title": row["title"],
        "summary": row.get("summary") or "",
        "body": row.get("body") or "",
        "category": row.get("category") or "",
        "class": CLASS_TO_WIRE[row["class"]],
        "language": row.get("language") or "vi",
        "valid_from": iso(row.get("valid_from")),
        "valid_until": iso(row.get("valid_until")),
        "areas": sorted(set(areas)),
        "plan": {k: plan[k] for k in ("at", "times", "weekdays", "monthdays", "asap", "repeat", "gap_s") if k in plan},
        "audio": None if not row.get("media") else {
            "path": f"media/{row['id']}", "id": row["media"], "duration_s": row.get("media_duration_s")},
    }


def feed_document(server: str, timezone: str, bulletins: list[dict[str, Any]], now: float) -> dict[str, Any]:
    return {"protocol": PROTOCOL, "server": server, "generated_at": iso(now), "timezone": timezone,
            "bulletins": bulletins}


@dataclass
class Feed:
    server: str
    timezone: str
    bulletins: list[Bulletin] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # items skipped, each with its reason


class _Envelope(_Wire):
    protocol: int = PROTOCOL
    server: str = Field("", max_length=128)
    timezone: str = Field("Asia/Ho_Chi_Minh", max_length=64)
    bulletins: list[Any] = Field(default_factory=list, max_length=MAX_BULLETINS)


def parse_feed(document: Any) -> Feed:
    """The feed's bulletins; a bad bulletin is a problem (with its key path), never the whole feed lost.
    WireError if the document itself is not a feed."""
    if not isinstance(document, dict):
        raise WireError("the feed must be a JSON object")
    try:
        envelope = _Envelope.model_validate(document)
    except ValidationError as exc:
        raise WireError(_message(exc, "feed")) from None
    if envelope.protocol != PROTOCOL:
        raise WireError(f"protocol: this server speaks protocol {PROTOCOL}, the feed is {envelope.protocol}")
    feed = Feed(envelope.server, envelope.timezone)
    for i, item in enumerate(envelope.bulletins):
        where = f"bulletins[{i}]"
        try:
            feed.bulletins.append(_bulletin(WireBulletin.model_validate(item), where))
        except ValidationError as exc:
            feed.problems.append(_message(exc, where))
        except WireError as exc:
            feed.problems.append(str(exc))
    return feed


def _bulletin(w: WireBulletin, where: str) -> Bulletin:
    if w.state == "active":
        if w.klass not in CLASS_FROM_WIRE:
            raise WireError(f"{where}.class: expected one of {', '.join(CLASS_FROM_WIRE)}, got {w.klass!r}")
        if not w.title:
            raise WireError(f"{where}.title: an active bulletin needs a title")
        if not w.body and w.audio is None:
            raise WireError(f"{where}: an active bulletin needs a body (text to read aloud) or audio")
        if not w.areas:
            raise WireError(f"{where}.areas: an active bulletin needs at least one area code")
    return Bulletin(
        upstream_id=w.id, version=w.version, withdrawn=w.state == "withdrawn", title=w.title, summary=w.summary,
        body=w.body, category=w.category, klass=CLASS_FROM_WIRE.get(w.klass, "thong-thuong"), language=w.language,
        valid_from=unix(w.valid_from, f"{where}.valid_from"), valid_until=unix(w.valid_until, f"{where}.valid_until"),
        areas=tuple(w.areas), plan=w.plan.model_dump(), audio=w.audio)


def map_areas(areas: Iterable[str], mapping: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """Area codes to our zones (link.upstream.areas, like alerts.cap_areas): (zones, unknown codes)."""
    zones: list[str] = []
    unknown: list[str] = []
    for code in areas:
        zone = mapping.get(code)
        if zone is None:
            unknown.append(code)
        elif zone not in zones:
            zones.append(zone)
    return zones, unknown


def content_fields(b: Bulletin, zones: list[str], origin: str, source: str,
                   media: str | None = None) -> dict[str, Any]:
    """Keyword arguments of storage.bulletins.BulletinContent for an imported bulletin (``media``: our
    media item made from its audio)."""
    return {"title": b.title, "summary": b.summary, "body": b.body, "category": b.category, "klass": b.klass,
            "language": b.language, "valid_from": b.valid_from, "valid_until": b.valid_until, "zones": zones,
            "plan": b.plan, "media": media, "source": source, "origin": origin, "origin_id": b.upstream_id}


# --- reports: downstream -> upstream -----------------------------------------------------------

class WirePlay(_Wire):
    id: int = Field(ge=0)                      # the downstream's play id: reports are idempotent by it
    bulletin: str = Field(min_length=1, max_length=128)   # the upstream's bulletin id
    channel: str = Field(min_length=1, max_length=128)
    area: str = Field("", max_length=128)     # the area code of the zone it played in
    slot: str | None = None                   # the planned time it played for
    started_at: str
    ended_at: str | None = None
    duration_s: float | None = Field(None, ge=0, le=86400 * 2)
    outcome: str | None = Field(None, max_length=32)
    online: int | None = Field(None, ge=0)    # loudspeakers online on the channel when it played
    acknowledged: int | None = Field(None, ge=0)


class WireLoudspeaker(_Wire):
    id: str = Field(min_length=1, max_length=128)
    name: str = Field("", max_length=200)
    area: str = Field("", max_length=128)     # the commune's area code
    channel: str = Field("", max_length=128)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    status: Literal["online", "offline"]
    last_seen: str | None = None


class WireDay(_Wire):
    day: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")   # local date at the downstream
    channel: str = Field(min_length=1, max_length=128)
    area: str = Field("", max_length=128)
    hours_on_air: float = Field(ge=0, le=24.01)
    loudspeakers: int = Field(ge=0)
    online_share: float | None = Field(None, ge=0, le=1)


def play_to_wire(row: Mapping[str, Any], upstream_id: str, area: str) -> dict[str, Any]:
    """A bulletin_plays row (its bulletin imported as ``upstream_id``) for the report."""
    started, ended = row["started_at"], row.get("ended_at")
    return {"id": int(row["id"]), "bulletin": upstream_id, "channel": row["channel"], "area": area,
            "slot": iso(row.get("slot")), "started_at": iso(started), "ended_at": iso(ended),
            "duration_s": round(ended - started, 3) if ended is not None else None,
            "outcome": row.get("outcome"), "online": row.get("online"), "acknowledged": row.get("acknowledged")}


def loudspeaker_to_wire(row: Mapping[str, Any], area: str, online: bool, last_seen: float | None) -> dict[str, Any]:
    return {"id": row["id"], "name": row.get("name") or "", "area": area, "channel": row.get("channel") or "",
            "lat": row.get("lat"), "lon": row.get("lon"), "status": "online" if online else "offline",
            "last_seen": iso(last_seen)}


def day_to_wire(row: Mapping[str, Any], area: str) -> dict[str, Any]:
    return {"day": row["day"], "channel": row["channel"], "area": area,
            "hours_on_air": round(float(row["hours_on_air"]), 4), "loudspeakers": int(row["loudspeakers"]),
            "online_share": None if row.get("online_share") is None else round(float(row["online_share"]), 4)}


def report_document(server: str, plays: list[dict[str, Any]], inventory: list[dict[str, Any]] | None,
                    days: list[dict[str, Any]], now: float) -> dict[str, Any]:
    """``inventory`` None: not part of this report (it is sent on its own interval); a list is the whole of it."""
    doc: dict[str, Any] = {"protocol": PROTOCOL, "server": server, "generated_at": iso(now), "plays": plays,
                           "daily": days}
    if inventory is not None:
        doc["inventory"] = inventory
    return doc


@dataclass
class Report:
    server: str
    plays: list[dict[str, Any]] = field(default_factory=list)      # rows for storage/link.py
    inventory: list[dict[str, Any]] | None = None
    days: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class _ReportEnvelope(_Wire):
    protocol: int = PROTOCOL
    server: str = Field("", max_length=128)
    plays: list[Any] = Field(default_factory=list, max_length=MAX_PLAYS)
    inventory: list[Any] | None = Field(None, max_length=MAX_LOUDSPEAKERS)
    daily: list[Any] = Field(default_factory=list, max_length=MAX_DAYS * 64)


def parse_report(document: Any) -> Report:
    if not isinstance(document, dict):
        raise WireError("the report must be a JSON object")
    try:
        envelope = _ReportEnvelope.model_validate(document)
    except ValidationError as exc:
        raise WireError(_message(exc, "report")) from None
    if envelope.protocol != PROTOCOL:
        raise WireError(f"protocol: this server speaks protocol {PROTOCOL}, the report is {envelope.protocol}")
    report = Report(envelope.server, inventory=None if envelope.inventory is None else [])
    for i, item in enumerate(envelope.plays):
        where = f"plays[{i}]"
        try:
            p = WirePlay.model_validate(item)
            started = unix(p.started_at, f"{where}.started_at")
            ended = unix(p.ended_at, f"{where}.ended_at")
            report.plays.append({
                "play_id": p.id, "bulletin": p.bulletin, "channel": p.channel, "area": p.area,
                "slot": unix(p.slot, f"{where}.slot"), "started_at": started, "ended_at": ended,
                "duration_s": p.duration_s if p.duration_s is not None else (
                    ended - started if ended is not None and started is not None else None),
                "outcome": p.outcome, "online": p.online, "acknowledged": p.acknowledged})
        except ValidationError as exc:
            report.problems.append(_message(exc, where))
        except WireError as exc:
            report.problems.append(str(exc))
    for i, item in enumerate(envelope.inventory or []):
        where = f"inventory[{i}]"
        try:
            s = WireLoudspeaker.model_validate(item)
            assert report.inventory is not None
            report.inventory.append({"id": s.id, "name": s.name, "area": s.area, "channel": s.channel, "lat": s.lat,
                                     "lon": s.lon, "status": s.status,
                                     "last_seen": unix(s.last_seen, f"{where}.last_seen")})
        except ValidationError as exc:
            report.problems.append(_message(exc, where))
        except WireError as exc:
            report.problems.append(str(exc))
    for i, item in enumerate(envelope.daily):
        where = f"daily[{i}]"
        try:
            d = WireDay.model_validate(item)
            report.days.append(d.model_dump())
        except ValidationError as exc:
            report.problems.append(_message(exc, where))
    return report
