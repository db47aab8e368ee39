"""Every request and response body of /api/v1, defined once.

A request model validates (unknown fields refused, strict JSON types, ranges)
and its errors name the key path; the same models generate the OpenAPI
document (api.openapi). Response models describe what handlers return and
are what they return: a handler builds one, the router serialises it.
A field sent as ``null`` is the same as a field left out.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from broadcaster.config import ID_PATTERN, LANGUAGE_PATTERN, MIN_KEY_LENGTH

T = TypeVar("T")


class Body(BaseModel):
    """A request body: strict JSON types, nothing unknown."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Out(BaseModel):
    """A response body."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _ident(value: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise PydanticCustomError("bad_id", "must be letters, digits, '-', '_' or '.' (at most 64), got {value}",
                                  {"value": repr(value)})
    return value


def _device_key(value: str) -> str:
    if len(value.encode("utf-8")) < MIN_KEY_LENGTH:
        raise PydanticCustomError("bad_value", "must be at least {n} bytes", {"n": MIN_KEY_LENGTH})
    return value


def _language(value: str) -> str:
    if not LANGUAGE_PATTERN.fullmatch(value.lower()):
        raise PydanticCustomError("bad_value", "must be a language code such as vi, km or vi-VN, got {value}",
                                  {"value": repr(value)})
    return value.lower()


LanguageCode = Annotated[str, AfterValidator(_language),
                         Field(max_length=32, description="a language code: vi, km, en")]
Ident = Annotated[str, AfterValidator(_ident),
                  Field(json_schema_extra={"pattern": f"^{ID_PATTERN.pattern}$", "maxLength": 64})]
Volume = Annotated[int, Field(ge=0, le=100)]
DeviceKey = Annotated[str, AfterValidator(_device_key), Field(json_schema_extra={"minLength": MIN_KEY_LENGTH})]
ZoneKind = Literal["province", "district", "commune", "ward", "hamlet", "group"]
Role = Literal["admin", "operator", "viewer"]


# --- common -----------------------------------------------------------------------

class ErrorDetail(Out):
    code: str
    message: str


class Error(Out):
    """Every error: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


class Page(Out, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class Me(Out):
    name: str
    role: Role
    zones: list[str]
    token: str | None = Field(None, description="the id of the token this call came with")


# --- console sessions --------------------------------------------------------------------

class SessionCreate(Body):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class PasswordChange(Body):
    current: str = Field(min_length=1, max_length=1024)
    new: str = Field(min_length=8, max_length=1024, description="at least 8 characters")


class ConsoleSettings(Out):
    tile_url: str | None = Field(None, description="the map's tile layer ({z}/{x}/{y}); none: drawn offline")


class Session(Out):
    """A console sign-in. ``csrf`` goes in the ``X-CSRF-Token`` header of every write the page makes."""

    name: str
    role: Role
    zones: list[str]
    permissions: list[str]
    csrf: str
    must_change_password: bool
    expires_at: float | None
    console: ConsoleSettings


# --- API tokens ------------------------------------------------------------------------

class TokenCreate(Body):
    label: str = Field("", max_length=200, description="a note to know the token by: the console, a script")
    days: int | None = Field(None, ge=1, le=3650,
                             description="lifetime in days; default and most: the server's api.token_days")
    user: str | None = Field(None, description="whose token (admin only); default the caller")


class Token(Out):
    id: str = Field(description="the public id it is listed and revoked by")
    user: str
    label: str
    created_at: float
    expires_at: float | None
    last_used_at: float | None = Field(description="to the minute; null if never used")
    session: bool = Field(False, description="a console sign-in (its cookie), not a script's token")


class TokenCreated(Token):
    token: str = Field(description="the secret, for 'Authorization: Bearer'; shown only this once")


# --- users (admin) -----------------------------------------------------------------------

Permission = Literal["bulletin.create", "bulletin.approve"]


class UserCreate(Body):
    name: Ident = Field(description="the sign-in name")
    role: Role
    zones: list[str] = Field([], max_length=200, description="where it may act (a subtree each); an operator or "
                                                             "viewer needs at least one")
    permissions: list[Permission] = Field([], description="granted beyond the role's (a viewer who writes or "
                                                          "approves bulletins)")
    password: str = Field(min_length=8, max_length=1024,
                          description="at least 8 characters; the user must change it at first sign-in")


class UserUpdate(Body):
    role: Role | None = None
    zones: list[str] | None = Field(None, max_length=200)
    permissions: list[Permission] | None = None


class UserPassword(Body):
    password: str = Field(min_length=8, max_length=1024, description="at least 8 characters; the user must "
                                                                     "change it at its next sign-in")


class User(Out):
    name: str
    role: Role
    zones: list[str]
    permissions: list[str] = Field(description="granted beyond the role's")
    must_change_password: bool = Field(description="the password was set by someone else: changed at sign-in")
    created_at: float
    tokens: int = Field(description="API tokens it holds (unexpired)")
    sessions: int = Field(description="console sessions signed in now")


class SessionsEnded(Out):
    ended: int


# --- zones and channels ----------------------------------------------------------------

class ZoneCreate(Body):
    id: Ident
    name: str
    kind: ZoneKind
    parent: str | None = None


class Zone(Out):
    id: str
    name: str
    kind: str
    parent: str | None


class ChannelCreate(Body):
    id: Ident
    name: str
    zone: str
    public: bool = True


class Multicast(Out):
    group: str
    port: int
    ttl: int


class Channel(Out):
    model_config = ConfigDict(extra="allow")  # described by control (app.describe_channel)

    id: str
    name: str
    zone: str
    public: bool
    listeners: int
    loudspeakers: int
    multicast: Multicast | None
    stream: str
    sdp: str | None
    live: dict[str, Any] | None = None
    relays: list[dict[str, Any]] = Field([], description="relays on air on the channel (RelayOnAir)")
    title: str | None = Field(None, description="what plays now, as the studio last said "
                              "(/admin/metadata); null when none was sent or the live session ended")


# --- loudspeakers ---------------------------------------------------------------------------

Latitude = Annotated[float, Field(ge=-90, le=90, description="WGS 84 degrees north, for the console's map")]
Longitude = Annotated[float, Field(ge=-180, le=180, description="WGS 84 degrees east, for the console's map")]


class LoudspeakerCreate(Body):
    id: Ident
    zone: str
    channel: str
    name: str | None = None
    volume: Volume | None = None
    key: DeviceKey | None = Field(None, description="omit to have the server generate one")
    lat: Latitude | None = None
    lon: Longitude | None = None


class LoudspeakerUpdate(Body):
    channel: str | None = None
    volume: Volume | None = None
    name: str | None = None
    lat: Latitude | None = None
    lon: Longitude | None = None


class Loudspeaker(Out):
    id: str
    name: str
    zone: str
    channel: str
    volume: int
    created_at: float
    lat: float | None = None
    lon: float | None = None
    online: bool
    last_heartbeat: float | None
    address: str | None
    status: dict[str, Any] | None


class LoudspeakerWithKey(Loudspeaker):
    key: str = Field(description="the device's secret, shown only this once")


class Key(Out):
    id: str
    key: str


# --- media and programmes ----------------------------------------------------------------------

class Media(Out):
    id: str
    zone: str
    title: str
    filename: str
    duration_s: float
    loudness_lufs: float | None
    original_lufs: float | None
    sha256: str
    size_bytes: int
    uploaded_by: str
    created_at: float


Recurrence = Literal["once", "daily", "weekdays", "weekly"]
OnRestart = Literal["resume", "restart", "skip"]
OnPreempt = Literal["pause", "skip"]


class ProgrammeCreate(Body):
    title: str
    zones: list[str] = Field(description="target zones: every channel in their subtrees")
    media: list[str] = Field([], description="media ids, played in order (or give relay)")
    relay: str | None = Field(None, description="a relay of the library (national or provincial radio) to relay "
                                                "for duration_s, instead of media")
    start: str = Field(description="local date and time of the first play, no offset: 2026-12-01T06:00 "
                                   "(schedule.timezone, Asia/Ho_Chi_Minh by default)")
    recurrence: Recurrence = "once"
    weekdays: list[Annotated[int, Field(ge=0, le=6)]] | None = Field(
        None, description="for weekly: 0 = Monday ... 6 = Sunday")
    until: str | None = Field(None, description="last local date a play may start on (2026-12-31)")
    duration_s: float | None = Field(None, ge=0, le=86400,
                                     description="length of each play, at most a day; default the media's total")
    on_restart: OnRestart = Field("resume", description="a play already running when the server starts: join at "
                                                        "the right offset, play from the start, or skip")
    on_preempt: OnPreempt = Field("pause", description="when an alert or announcement takes the channel: pause "
                                                       "and resume where it stopped, or end")
    priority: str | int = Field("normal", description="class: normal (thong-thuong, 20) or background (10)")


class Programme(Out):
    id: str
    title: str
    zones: list[str]
    media: list[str]
    relay: str | None = None
    start_local: str
    duration_s: float
    recurrence: str
    weekdays: list[int]
    until: str | None
    priority: int
    on_restart: str
    on_preempt: str
    created_by: str
    created_at: float
    channels: list[str]
    next: list[float] = Field(description="the next start times (Unix seconds), up to 5 within 8 days")


class CalendarEntry(Out):
    kind: Literal["programme", "bulletin"]
    id: str = Field(description="the programme's or the bulletin's id")
    title: str
    start: float = Field(description="Unix seconds")
    end: float | None = Field(description="Unix seconds (exclusive); None for a bulletin (its length is its audio's)")
    priority: int
    recurrence: str | None = Field(None, description="a programme's: once, daily, weekdays, weekly")


class Calendar(Out):
    channel: str
    timezone: str = Field(description="the schedule's time zone: programmes' local times are in it")
    start: float
    end: float
    items: list[CalendarEntry] = Field(description="by start time")


# --- relays -------------------------------------------------------------------------------------

class RelayCreate(Body):
    name: str = Field(min_length=1, max_length=200, description="what listeners and the broadcast log call it: VOV1")
    url: str = Field(min_length=8, max_length=2000,
                     description="http(s) URL of an Icecast/Shoutcast stream (MP3, AAC, Ogg) or an HLS playlist")
    zone: str = Field(description="the zone whose channels (and those below) may relay it")


class Relay(Out):
    id: str
    zone: str
    name: str
    url: str
    created_by: str
    created_at: float


class RelayStart(Body):
    relay: str = Field(description="the relay's id")
    duration_s: float = Field(3600, gt=0, le=86400, description="how long it stays on air (at most a day)")
    priority: Literal["background", "normal", "live"] = Field(
        "live", description="live (30, the default: over scheduled programmes, like a studio), normal (20) or "
                            "background (10)")


class RelayOnAir(Out):
    model_config = ConfigDict(extra="allow")  # described by control (RelayRun.describe)

    id: str
    relay: str
    name: str
    state: str


# --- alerts -------------------------------------------------------------------------------------

AlertPriority = Literal["emergency", "khan-cap", "announcement", "uu-tien", "priority", 50, 40]


class AlertCreate(Body):
    title: str
    zones: list[str]
    text: str = Field("", max_length=5000,
                      description="read aloud by the TTS engine (espeak-ng, Vietnamese voice by default)")
    media: str | None = Field(None, description="a media id to play instead of text")
    language: str = "vi"
    priority: AlertPriority = Field("emergency", description="emergency / khan-cap (50, the default) or "
                                                             "announcement / uu-tien (40)")
    policy: Literal["preempt", "duck"] = "preempt"
    repeat: int | None = Field(None, ge=1, le=20, description="default alerts.repeat")
    gap_s: float | None = Field(None, ge=0, le=600, description="default alerts.gap_s")
    volume: Volume | None = Field(None, description="default alerts.volume")


class Alert(Out):
    model_config = ConfigDict(extra="allow")  # described by control (app.alerts.describe)

    id: str
    title: str
    zones: list[str]
    channels: list[str]
    priority: str
    policy: str
    repeat: int
    volume: int
    created_by: str
    status: Literal["on_air", "completed", "cancelled", "failed", "stopped", "interrupted"] = Field(
        description="interrupted: on air when the server stopped unexpectedly, and not played again")
    cap_identifier: str | None
    first_frame_ms: dict[str, float] = Field(
        description="per channel: from acceptance to the first frame leaving the server")
    loudspeakers_commanded: list[str]
    loudspeakers_acknowledged: list[str]


class Cancelled(Out):
    cancelled: list[str]


# --- speech ------------------------------------------------------------------------------------

class SpeechPreview(Body):
    text: str = Field(min_length=1, description="the text to read; at most tts.max_text_chars (5000) characters")
    language: LanguageCode = "vi"


class SpeechLanguage(Out):
    language: str
    engine: str = Field(description="espeak-ng, or the name of the command engine configured under tts.engines")


class SpeechLanguages(Out):
    languages: list[SpeechLanguage] = Field(description="every language text can be read in; any other is refused")
    max_text_chars: int


# --- bulletins ----------------------------------------------------------------------------------

BulletinClass = Literal["thong-thuong", "uu-tien", "khan-cap"]
BulletinState = Literal["draft", "submitted", "approved", "rejected", "scheduled", "played", "expired",
                        "withdrawn"]
Language = Annotated[str, Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$", max_length=35,
                                description="BCP 47: vi, km (Khmer), en, ...")]
Moment = Annotated[str | float | None, Field(description="local date and time (2026-12-02T06:00, "
                                                         "schedule.timezone) or Unix seconds")]


class BulletinPlan(Body):
    at: list[str] = Field([], max_length=100, description="local date-times, each played once: 2026-12-02T06:30")
    times: list[str] = Field([], max_length=48, description="local times of day, every valid day: 06:30")
    weekdays: list[int] = Field([], max_length=7, description="narrow times to these days, 0 = Monday")
    monthdays: list[int] = Field([], max_length=31, description="or to these days of the month, 1-31")
    asap: bool = Field(False, description="play once as soon as it is approved")
    repeat: int = Field(1, ge=1, le=10, description="plays per slot")
    gap_s: float = Field(0, ge=0, le=7200, description="silence between those plays")


class BulletinWrite(Body):
    title: str = Field(min_length=1, max_length=200)
    summary: str = Field("", max_length=1000, description="shown on e-boards and in the Atom feed")
    text: str = Field("", max_length=20000, description="read aloud (TTS on approval) and shown")
    media: str | None = Field(None, description="a media item to play instead of reading the text")
    category: str = Field("", max_length=64, description="e.g. thoi-tiet, y-te, an-ninh, nong-nghiep")
    klass: BulletinClass = Field("thong-thuong", alias="class",
                                 description="thong-thuong (the commune chooses when: scheduled class), uu-tien "
                                             "(ahead of the commune's programme: announcement class), khan-cap "
                                             "(at once, through the alert path: emergency class)")
    language: Language = "vi"
    valid_from: Moment = None
    valid_until: Moment = Field(None, description="after this it never plays (and leaves the e-boards)")
    zones: list[str] = Field(min_length=1, max_length=200)
    plan: BulletinPlan


class BulletinCreate(BulletinWrite):
    submit: bool = Field(False, description="submit for approval at once (else a draft). An emergency "
                                            "(khan-cap) bulletin submitted by someone who may alert those "
                                            "zones goes straight to air through the alert path")


class BulletinUpdate(BulletinWrite):
    version: int = Field(ge=1, description="the version edited: a change made meanwhile is refused (409)")


class BulletinReason(Body):
    reason: str = Field("", max_length=1000)


class Bulletin(Out):
    id: str
    title: str
    summary: str
    text: str
    media: str | None
    speech: str | None = Field(description="the media item the text was read into, on approval")
    category: str
    klass: str = Field(alias="class")
    language: str
    valid_from: float | None
    valid_until: float | None
    zones: list[str]
    plan: dict[str, Any]
    source: Literal["local", "province", "central"]
    origin: str | None
    origin_id: str | None
    state: BulletinState
    reason: str
    version: int
    created_by: str
    created_at: float
    updated_by: str | None
    updated_at: float | None
    submitted_by: str | None
    submitted_at: float | None
    approved_by: str | None
    approved_at: float | None
    next: list[float] = Field([], description="its next slots (Unix seconds), up to five")
    changes: dict[str, dict[str, Any]] = Field(
        {}, description="after an edit of an approved bulletin: each changed field, approved and now")
    warnings: list[str] = Field([], description="e.g. a slot that falls in a programme, so it waits for its end")


class BulletinPlay(Out):
    bulletin: str
    slot: float
    channel: str
    zone: str
    started_at: float
    ended_at: float | None
    outcome: str | None
    online: int | None = Field(description="loudspeakers online on the channel when it started")
    acknowledged: int | None = Field(description="loudspeakers that acknowledged (emergency bulletins)")


class EboardItem(Out):
    id: str
    title: str
    summary: str
    text: str
    klass: str = Field(alias="class")
    category: str
    language: str
    valid_from: float | None
    valid_until: float | None
    zones: list[str]
    source: str
    approved_at: float | None


class Eboard(Out):
    zone: str
    name: str
    updated: float
    items: list[EboardItem]


# --- logs and reports --------------------------------------------------------------------------------

class Broadcast(Out):
    id: int
    channel: str
    zone: str
    kind: str
    item: str
    started_at: float
    ended_at: float | None
    started_by: str
    outcome: str | None = Field(description="completed, preempted, failed, stopped, interrupted; null while on air")
    detail: str


class Audit(Out):
    id: int
    at: float
    actor: str
    action: str
    target: str
    zone: str | None
    remote: str | None
    detail: str | None


class ReportCommune(Out):
    zone: str
    name: str
    hours_on_air: dict[str, float]
    hours_on_air_total: float
    loudspeakers: int
    availability: float | None = Field(description="share of the period the loudspeakers were online")


class Report(Out):
    zone: str
    from_: float = Field(alias="from")
    to: float
    communes: list[ReportCommune]


class YearlyRow(Out):
    """One commune's year (or the total of the report's zone); docs/reports.md says what each figure means."""

    zone: str
    name: str
    stations: int = Field(description="channels (đài truyền thanh) in the commune")
    loudspeaker_clusters: int = Field(description="registered IP loudspeakers (cụm loa)")
    clusters_online_share: float | None = Field(
        description="time-averaged share of the clusters online over the period (so far); null without clusters")
    hours_on_air: float = Field(description="hours on air summed over the commune's stations")
    hours_by_class: dict[str, float] = Field(description="hours on air by the broadcast log's kind")
    hours_by_source: dict[str, float] = Field(description="hours on air by source: local, province, central, relay")
    bulletins_played: int = Field(description="bulletins heard at least once in the period, each counted once")
    bulletins_approved: int = Field(description="bulletins approved in the period whose targets reach the commune")
    bulletins_by_class: dict[str, int]
    bulletins_by_category: dict[str, int]
    alerts: int = Field(description="alerts begun in the period whose targets reach the commune")
    alert_loudspeakers_commanded: int
    alert_loudspeakers_acknowledged: int
    alert_acknowledged_share: float | None
    live_sessions: int
    live_hours: float


class YearlyAlert(Out):
    id: str
    title: str
    zones: list[str]
    priority: int
    bulletin: str | None
    started_at: float
    ended_at: float | None
    loudspeakers_commanded: int = Field(description="within the report's zone")
    loudspeakers_acknowledged: int
    acknowledged_share: float | None


class YearlyReport(Out):
    year: int
    timezone: str
    first_day: str = Field(description="local date, the period's first day")
    last_day: str = Field(description="local date, the period's last day (inclusive)")
    zone: str
    name: str
    from_: float = Field(alias="from", description="Unix seconds, inclusive")
    to: float = Field(description="Unix seconds, exclusive")
    generated_at: float
    communes: list[YearlyRow]
    total: YearlyRow
    alert_list: list[YearlyAlert] = Field(description="the period's alerts, oldest first, at most 1000")
    alert_list_truncated: bool


# --- validation errors in words ------------------------------------------------------------------------

_TYPE_WORDS = {"string_type": "a string", "int_type": "an integer", "float_type": "a number",
               "bool_type": "true or false", "list_type": "a list", "dict_type": "an object",
               "model_type": "an object"}


def _path(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and (p.startswith("function-") or "[" in p
                                                                 or p in ("str", "int", "list", "bool", "float")))]
    return ".".join(parts)


def validation_message(model: type[BaseModel], exc: ValidationError) -> tuple[str, str]:
    """The first error as (code, "key.path: what is wrong"); codes are the API's, not pydantic's."""
    errors = exc.errors(include_url=False)
    # With a union (x | None), pydantic reports each branch; the branch that is not None says more.
    first = next((e for e in errors if e["type"] != "none_required"), errors[0])
    kind, path, ctx = first["type"], _path(first["loc"]), first.get("ctx") or {}
    if kind == "missing":
        return "missing_field", f"{path}: is required"
    if kind == "extra_forbidden":
        return "unknown_field", f"{path}: unknown field; accepted: {', '.join(model.model_fields)}"
    if kind in _TYPE_WORDS or kind.endswith("_type"):
        got = type(first["input"]).__name__ if first["input"] is not None else "null"
        return "wrong_type", f"{path}: must be {_TYPE_WORDS.get(kind, kind.removesuffix('_type'))}, got {got}"
    if kind in ("bad_id", "bad_value"):
        return kind, f"{path}: {first['msg']}"
    bounds = {"less_than_equal": "≤ {le}", "less_than": "< {lt}", "greater_than_equal": "≥ {ge}",
              "greater_than": "> {gt}", "too_short": "at least {min_length} long",
              "too_long": "at most {max_length} long", "string_too_short": "at least {min_length} characters",
              "string_too_long": "at most {max_length} characters"}
    if kind in bounds:
        return "bad_value", f"{path}: must be {bounds[kind].format(**ctx)}"
    if kind == "literal_error":
        return "bad_value", f"{path}: must be one of {ctx.get('expected', '')}"
    return "bad_value", f"{path}: {first['msg']}"
