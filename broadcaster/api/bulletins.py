"""/api/v1/bulletins: written, approved, scheduled, played; and /api/v1/eboards for the boards.

Who may do what is checked here (control/auth.py: ``bulletin.create`` writes,
edits, submits and withdraws; ``bulletin.approve`` approves and rejects, both
within the caller's zones); the state rules and the four-eyes rule are
control/bulletin_rules.py, applied by the desk (control/bulletins.py). A
bulletin another commune owns is answered as missing.

The e-board feeds are public: they carry only approved bulletins with text,
valid now, which are published information; a draft never shows.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from broadcaster.api.call import ApiError, Call, Param, Raw, Reply, Route
from broadcaster.api.models import (
    Bulletin,
    BulletinCreate,
    BulletinPlay,
    BulletinReason,
    BulletinUpdate,
    BulletinWrite,
    Eboard,
    EboardItem,
    Page,
)
from broadcaster.control.auth import Action
from broadcaster.control.bulletin_plan import Plan
from broadcaster.control.bulletin_rules import STATES
from broadcaster.control.bulletins import BulletinError, content_from_row
from broadcaster.storage.bulletins import BulletinContent, content_of

NEXT_COUNT = 5
LIST_WINDOW_S = 8 * 86400  # next slots in a list look a week ahead, as programmes' do
EBOARD_LIMIT = 50


def _moment(call: Call, value: str | float | None, name: str) -> float | None:
    if value is None or isinstance(value, int | float):
        return None if value is None else float(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "bad_value", f"{name}: a local date and time (2026-12-02T06:00) or Unix seconds, "
                                         f"not {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(call.app.config.schedule.timezone))
    return parsed.timestamp()


def _content(call: Call, body: BulletinWrite) -> BulletinContent:
    if not all(z in call.app.zones for z in body.zones):
        unknown = next(z for z in body.zones if z not in call.app.zones)
        raise ApiError(400, "bad_reference", f"zones: no zone {unknown!r}")
    return BulletinContent(title=body.title, summary=body.summary, body=body.text, category=body.category,
                           klass=body.klass, language=body.language,
                           valid_from=_moment(call, body.valid_from, "valid_from"),
                           valid_until=_moment(call, body.valid_until, "valid_until"), zones=list(body.zones),
                           plan=body.plan.model_dump(exclude_defaults=True) | {"repeat": body.plan.repeat},
                           media=body.media)


async def _check_media(call: Call, content: BulletinContent) -> None:
    if content.media is None:
        return
    row = await call.storage.media.get(content.media)
    if row is None or not call.may_see(row["zone"]):
        raise ApiError(400, "bad_reference", f"media: no media item {content.media!r}")


def _plan(content: BulletinContent) -> Plan:
    from broadcaster.control.bulletin_plan import PlanError

    try:
        return Plan.parse(content.plan)
    except PlanError as exc:
        raise ApiError(400, "bad_value", str(exc)) from None


def _view(call: Call, row: dict[str, Any], warnings: list[str] | None = None,
          window_s: float = 35 * 86400) -> Bulletin:
    """``window_s``: how far its next slots are looked for (a page of 500 looks a week ahead: the reactor
    builds it)."""
    now = call.app.wall()
    nexts: list[float] = []
    if row["state"] in ("approved", "scheduled", "submitted", "draft"):
        try:
            plan = Plan.parse(row["plan"])
            claimed = call.app.bulletins.claimed.get(row["id"], set())
            nexts = [s for s in plan.slots(call.app.bulletins.tz, now, now + window_s,
                                           valid_from=row["valid_from"], valid_until=row["valid_until"],
                                           asap_at=row["approved_at"] or now) if s not in claimed][:NEXT_COUNT]
        except ValueError:
            nexts = []
    changes: dict[str, dict[str, Any]] = {}
    if row.get("approved_content") and row["state"] == "submitted":
        current = content_of(row)
        for name, approved in row["approved_content"].items():
            if current.get(name) != approved:
                changes["class" if name == "klass" else "text" if name == "body" else name] = {
                    "approved": approved, "now": current.get(name)}
    data = {**row, "text": row["body"], "next": nexts, "changes": changes, "warnings": warnings or []}
    for name in ("body", "approved_content", "next_at"):
        data.pop(name, None)
    return Bulletin.model_validate(data)


async def _row(call: Call) -> dict[str, Any]:
    row = await call.storage.bulletins.get(call.params["id"])
    if row is None or not call.may_see(*row["zones"]):
        raise ApiError(404, "not_found", f"no bulletin {call.params['id']!r}")
    return row


def _may_alert(call: Call, zones: list[str]) -> bool:
    if call.principal.role != "admin" and not call.app.config.alerts.operators_may_alert:
        return False
    return call.may(Action.WRITE, *zones)


def _desk_error(exc: BulletinError) -> ApiError:
    return ApiError(exc.status, exc.code, str(exc), retry_after_s=exc.retry_after_s)


async def list_bulletins(call: Call) -> Reply:
    limit, offset = call.paging()
    states = [s for s in (call.query.get("state") or "").split(",") if s]
    wrong = [s for s in states if s not in STATES]
    if wrong:
        raise ApiError(400, "bad_query", f"state: {wrong[0]!r} is not one of {', '.join(STATES)}")
    found = await call.storage.bulletins.page(call.visible(), states, limit, offset)
    return 200, Page[Bulletin](items=[_view(call, r, window_s=LIST_WINDOW_S) for r in found.items],
                               total=found.total, limit=limit,
                               offset=offset)


async def get_bulletin(call: Call) -> Reply:
    return 200, _view(call, await _row(call))


async def create_bulletin(call: Call) -> Reply:
    body = call.body(BulletinCreate)
    content = _content(call, body)
    call.authorize(Action.BULLETIN_CREATE, *content.zones)
    plan = _plan(content)
    await _check_media(call, content)
    straight = body.submit and content.klass == "khan-cap" and _may_alert(call, content.zones)
    try:
        row = await call.app.bulletins.create(call.actor, content, body.submit, straight_to_air=straight)
    except BulletinError as exc:
        raise _desk_error(exc) from None
    return 201, _view(call, row, [] if straight else call.app.bulletins.warnings(content, plan))


async def update_bulletin(call: Call) -> Reply:
    row = await _row(call)
    call.authorize(Action.BULLETIN_CREATE, *row["zones"])
    body = call.body(BulletinUpdate)
    content = _content(call, body)
    call.authorize(Action.BULLETIN_CREATE, *content.zones)
    plan = _plan(content)
    await _check_media(call, content)
    content = replace(content, source=row["source"], origin=row["origin"], origin_id=row["origin_id"])
    try:
        updated = await call.app.bulletins.edit(call.actor, row, content, body.version)
    except BulletinError as exc:
        raise _desk_error(exc) from None
    return 200, _view(call, updated, call.app.bulletins.warnings(content, plan))


def _authorize_any(call: Call, row: dict[str, Any], *actions: Action) -> None:
    """The caller holds one of ``actions`` on every zone of the bulletin (else the first's 403)."""
    if not any(call.may(action, *row["zones"]) for action in actions[1:]):
        call.authorize(actions[0], *row["zones"])


async def _move(call: Call, action: str, *permissions: Action) -> Reply:
    row = await _row(call)
    _authorize_any(call, row, *permissions)
    reason = call.body(BulletinReason).reason if action in ("reject", "withdraw") else ""
    try:
        if action == "approve":
            updated = await call.app.bulletins.approve(call.actor, row)
        else:
            updated = await call.app.bulletins.move(call.actor, row, action, reason)
    except BulletinError as exc:
        raise _desk_error(exc) from None
    warnings = call.app.bulletins.warnings(content_from_row(updated), Plan.parse(updated["plan"]),
                                           updated["approved_at"]) if action == "approve" else []
    return 200, _view(call, updated, warnings)


async def submit_bulletin(call: Call) -> Reply:
    return await _move(call, "submit", Action.BULLETIN_CREATE)


async def approve_bulletin(call: Call) -> Reply:
    return await _move(call, "approve", Action.BULLETIN_APPROVE)


async def reject_bulletin(call: Call) -> Reply:
    return await _move(call, "reject", Action.BULLETIN_APPROVE)


async def withdraw_bulletin(call: Call) -> Reply:
    return await _move(call, "withdraw", Action.BULLETIN_CREATE, Action.BULLETIN_APPROVE)


async def bulletin_plays(call: Call) -> Reply:
    row = await _row(call)
    plays = await call.storage.bulletins.plays(row["id"])
    return 200, Page[BulletinPlay](items=[BulletinPlay.model_validate({k: v for k, v in p.items() if k != "id"})
                                          for p in plays], total=len(plays), limit=len(plays), offset=0)


async def preview_bulletin(call: Call) -> Reply:
    """The text as it would be read on approval: for the writer and the approver to hear."""
    from broadcaster.control.tts import NoVoice, SpeechError
    from broadcaster.control.workers import Busy

    row = await _row(call)
    _authorize_any(call, row, Action.BULLETIN_CREATE, Action.BULLETIN_APPROVE)
    if not row["body"].strip():
        raise ApiError(400, "missing_field", "the bulletin has no text to read aloud")
    speech = call.app.speech
    if speech.voices.engine_for(row["language"]) is None:
        raise ApiError(409, "no_voice", str(NoVoice(row["language"])))
    try:
        audio = await speech.preview(row["body"], row["language"])
    except Busy as exc:
        raise ApiError(503, "busy", f"speech is being made for others: {exc}", retry_after_s=exc.retry_after_s) \
            from None
    except SpeechError as exc:
        raise ApiError(422, "speech_failed", f"the text could not be read aloud: {exc}") from None
    return 200, Raw("audio/ogg", audio)


# --- e-boards ------------------------------------------------------------------------------------

async def _eboard(call: Call) -> tuple[str, list[dict[str, Any]], float]:
    zone = call.params["zone"]
    if zone not in call.app.zones:
        raise ApiError(404, "not_found", f"no zone {zone!r}")
    now = call.app.wall()
    return zone, await call.storage.bulletins.eboard(call.app.zones.ancestors(zone), now, EBOARD_LIMIT), now


async def eboard_json(call: Call) -> Reply:
    zone, rows, now = await _eboard(call)
    fields = set(EboardItem.model_fields) - {"klass", "text"}
    items = [EboardItem.model_validate({**{k: r[k] for k in fields}, "class": r["class"], "text": r["body"]})
             for r in rows]
    return 200, Eboard(zone=zone, name=call.app.zones.names.get(zone, zone), updated=now, items=items)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


async def eboard_atom(call: Call) -> Reply:
    """Atom 1.0 (RFC 4287): what a portal's widget or an LED board's controller already reads."""
    zone, rows, now = await _eboard(call)
    name = call.app.zones.names.get(zone, zone)
    base = f"urn:broadcaster:eboard:{zone}"
    entries = []
    for r in rows:
        categories = "".join(f'<category term="{escape(t)}"/>' for t in (r["class"], r["category"]) if t)
        validity = " ".join(p for p in (f"từ {_iso(r['valid_from'])}" if r["valid_from"] else "",
                                         f"đến {_iso(r['valid_until'])}" if r["valid_until"] else "") if p)
        entries.append(
            f"<entry><id>urn:broadcaster:bulletin:{escape(r['id'])}:{r['version']}</id>"
            f"<title>{escape(r['title'])}</title><updated>{_iso(r['approved_at'] or r['created_at'])}</updated>"
            f"{categories}<summary>{escape(r['summary'] or r['body'][:300])}</summary>"
            f"<content type=\"text\">{escape(r['body'])}</content>"
            + (f"<rights>{escape(validity)}</rights>" if validity else "")
            + "</entry>")
    feed = ('<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="vi">'
            f"<id>{base}</id><title>{escape(name)}: bản tin</title><updated>{_iso(now)}</updated>"
            f"<author><name>{escape(name)}</name></author>{''.join(entries)}</feed>\n")
    return 200, Raw("application/atom+xml; charset=utf-8", feed)


ID = Param("id", "the bulletin's id", where="path", required=True)
ZONE = Param("zone", "a zone id: its bulletins and those of the zones above it", where="path", required=True)
ROUTES = [
    Route("GET", "/api/v1/bulletins", list_bulletins, "Bulletins visible to the caller, newest first",
          Page[Bulletin], paged=True, query=(Param("state", "only these states, comma-separated"),)),
    Route("POST", "/api/v1/bulletins", create_bulletin,
          "Write a bulletin (bulletin.create): a draft, or submitted for approval; an emergency one submitted by "
          "someone who may alert goes straight to air", Bulletin, 201, BulletinCreate, errors=(403, 409)),
    Route("GET", "/api/v1/bulletins/{id}", get_bulletin, "One bulletin, with what changed since its approval",
          Bulletin, errors=(404,), query=(ID,)),
    Route("PUT", "/api/v1/bulletins/{id}", update_bulletin,
          "Edit a bulletin (bulletin.create); an approved one goes back to submitted", Bulletin, 200,
          BulletinUpdate, errors=(403, 404, 409), query=(ID,)),
    Route("POST", "/api/v1/bulletins/{id}/submit", submit_bulletin, "Submit a draft or rejected bulletin",
          Bulletin, errors=(403, 404, 409), query=(ID,)),
    Route("POST", "/api/v1/bulletins/{id}/approve", approve_bulletin,
          "Approve (bulletin.approve; not its author's): its text is read aloud and stored, then it plays",
          Bulletin, errors=(403, 404, 409, 422, 503), query=(ID,)),
    Route("POST", "/api/v1/bulletins/{id}/reject", reject_bulletin, "Reject with a reason (bulletin.approve)",
          Bulletin, 200, BulletinReason, errors=(403, 404, 409), query=(ID,)),
    Route("POST", "/api/v1/bulletins/{id}/withdraw", withdraw_bulletin,
          "Withdraw: it never plays again, and stops if on air", Bulletin, 200, BulletinReason,
          errors=(403, 404, 409), query=(ID,)),
    Route("GET", "/api/v1/bulletins/{id}/plays", bulletin_plays,
          "Its plays per slot and channel: when, how it ended, loudspeakers online and acknowledging",
          Page[BulletinPlay], errors=(404,), query=(ID,)),
    Route("GET", "/api/v1/bulletins/{id}/preview", preview_bulletin,
          "Its text read aloud as it will be on approval (audio/ogg)", None, errors=(404, 409, 422, 503),
          query=(ID,)),
    Route("GET", "/api/v1/eboards/{zone}.atom", eboard_atom,
          "The zone's current bulletins as an Atom feed, emergency first (public)", None, errors=(404,),
          query=(ZONE,), public=True),
    Route("GET", "/api/v1/eboards/{zone}", eboard_json,
          "The zone's current bulletins for a public e-board or portal, emergency first (public)", Eboard,
          errors=(404,), query=(ZONE,), public=True),
]
