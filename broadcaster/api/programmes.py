"""/api/v1/programmes: playlists of media on target zones, once or recurring.

The schedule (control) decides clashes; storage keeps the rows. The next
start times of a page are computed from one pass over the schedule's
occurrences, not one pass per programme.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import date, datetime
from typing import Any

from broadcaster.api.call import ApiError, Call, Param, Reply, Route, facade
from broadcaster.api.models import Page, Programme, ProgrammeCreate
from broadcaster.control.auth import Action
from broadcaster.storage.programmes import NewProgramme

log = logging.getLogger(__name__)
NEXT_WINDOW_S = 8 * 86400
NEXT_COUNT = 5


def _next_starts(call: Call) -> dict[str, list[float]]:
    now = call.app.wall()
    starts: dict[str, list[float]] = defaultdict(list)
    for o in call.app.schedule.occurrences(now, now + NEXT_WINDOW_S):
        if len(starts[o.programme.id]) < NEXT_COUNT:
            starts[o.programme.id].append(o.start)
    return starts


def _view(call: Call, row: dict[str, Any], starts: dict[str, list[float]]) -> Programme:
    programme = call.app.schedule.get(row["id"])
    return Programme.model_validate({**row, "channels": list(programme.channels) if programme else [],
                                     "next": starts.get(row["id"], [])})


async def _row(call: Call) -> dict[str, Any]:
    row = await call.storage.programmes.get(call.params["id"])
    if row is None or not call.may_see(*row["zones"]):  # another commune's programme is answered as missing
        raise ApiError(404, "not_found", f"no programme {call.params['id']!r}")
    return row


async def list_programmes(call: Call) -> Reply:
    limit, offset = call.paging()
    found = await call.storage.programmes.list_visible(call.visible())
    starts = _next_starts(call)
    return 200, Page[Programme](items=[_view(call, r, starts) for r in found[offset:offset + limit]],
                                total=len(found), limit=limit, offset=offset)


async def get_programme(call: Call) -> Reply:
    return 200, _view(call, await _row(call), _next_starts(call))


def _priority(value: str | int) -> int:
    from broadcaster.control.programmes import PRIORITY_NAMES

    if isinstance(value, str):
        if value not in PRIORITY_NAMES:
            raise ApiError(400, "bad_value", f"priority: must be one of {', '.join(PRIORITY_NAMES)}")
        return int(PRIORITY_NAMES[value])
    if value not in (10, 20):
        raise ApiError(400, "bad_value", "priority: a scheduled programme's class is 10 (background) or 20 (normal)")
    return value


async def _planned(call: Call, body: ProgrammeCreate, programme_id: str) -> tuple[Any, NewProgramme]:
    """The body checked against zones, scope, media and relays: the schedule's programme and its row."""
    from broadcaster.control.schedule import Programme as Scheduled

    if not body.zones or not all(z in call.app.zones for z in body.zones):
        raise ApiError(400, "bad_reference", "zones: must be a non-empty list of zone ids")
    call.authorize(Action.WRITE, *body.zones)
    if bool(body.media) == bool(body.relay):
        raise ApiError(400, "bad_value", "give either media (a playlist) or relay, not both and not neither")
    if body.relay is not None:
        from broadcaster.api.relays import relay_row

        relay = await relay_row(call, body.relay)
        below = [z for z in body.zones if relay["zone"] not in call.app.zones.ancestors(z)]
        if below:
            raise ApiError(400, "bad_reference", f"relay: {relay['id']!r} belongs to zone {relay['zone']!r}, "
                                                 f"which is not zone {below[0]!r} or above it")
        if not body.duration_s:
            raise ApiError(400, "bad_value", "duration_s: a relay programme needs its length")
    found = await call.storage.media.get_many(body.media) if body.media else {}
    missing = [m for m in body.media if m not in found or not call.may_see(found[m]["zone"])]
    if missing:
        raise ApiError(400, "bad_reference", f"media: no media item {missing[0]!r}")
    channels = call.app.channels_in(body.zones)
    if not channels:
        raise ApiError(400, "bad_reference", "zones: the zones have no channel to play on")
    priority = _priority(body.priority)
    try:
        start = datetime.fromisoformat(body.start)
        until = date.fromisoformat(body.until) if body.until else None
    except ValueError:
        raise ApiError(400, "bad_value", "start is a local date and time (2026-12-01T06:00), until a date") from None
    if start.tzinfo is not None:
        raise ApiError(400, "bad_value", f"start: local time in {call.app.config.schedule.timezone}; "
                       "give it without an offset")
    duration = float(body.duration_s or sum(found[m]["duration_s"] for m in body.media))
    programme = Scheduled(id=programme_id, title=body.title, channels=channels, start=start,
                          duration_s=duration, recurrence=body.recurrence, weekdays=tuple(body.weekdays or ()),
                          until=until, priority=priority, on_restart=body.on_restart, relay=body.relay)
    item = NewProgramme(id=programme.id, title=programme.title, zones=list(body.zones), media=list(body.media),
                        start_local=start.isoformat(), duration_s=duration, recurrence=programme.recurrence,
                        weekdays=list(programme.weekdays), until=until.isoformat() if until else None,
                        priority=priority, on_restart=programme.on_restart, on_preempt=body.on_preempt,
                        relay=body.relay)
    return programme, item


async def _schedule(call: Call, programme: Any) -> None:
    """Into the schedule (replacing one of the same id), or the clash named as a 409."""
    from broadcaster.control.schedule import Clash, ScheduleError

    try:
        await facade(call.app.schedule.add, programme)
    except Clash as exc:
        raise ApiError(409, "clash", str(exc)) from None
    except ScheduleError as exc:
        raise ApiError(400, "bad_value", str(exc)) from None


async def create_programme(call: Call) -> Reply:
    programme, item = await _planned(call, call.body(ProgrammeCreate), "p-" + uuid.uuid4().hex[:10])
    await _schedule(call, programme)
    try:
        row = await call.storage.programmes.add(call.actor, item)
    except BaseException:
        await facade(call.app.schedule.remove, programme.id)
        raise
    return 201, _view(call, row, _next_starts(call))


async def _restore(call: Call, programme_id: str, before: Any) -> None:
    """The schedule as the unchanged row says, after a write that failed: the old version back, or
    none if the schedule had none (a row it could not take at start). An old version that no longer
    fits (a programme took its slot while the write was on its way) is left out and logged, as
    reload_programmes leaves out a row it cannot take: the caller hears the write's error, not this."""
    from broadcaster.control.schedule import ScheduleError

    if before is not None:
        try:
            await facade(call.app.schedule.add, before)
            return
        except ScheduleError as exc:
            log.error("programme %s not scheduled: its change was not stored, and the old version "
                      "no longer fits: %s", programme_id, exc)
    await facade(call.app.schedule.remove, programme_id)


async def replace_programme(call: Call) -> Reply:
    """Every field at once (the console's edit): the schedule takes the new version in place of the
    old (which it does not clash with), the row follows; if the row cannot be written, the schedule
    goes back to what the row says (_restore)."""
    row = await _row(call)
    call.authorize(Action.WRITE, *row["zones"])
    programme, item = await _planned(call, call.body(ProgrammeCreate), row["id"])
    before = call.app.schedule.get(row["id"])
    await _schedule(call, programme)
    try:
        updated = await call.storage.programmes.replace(call.actor, item)
    except BaseException:
        await _restore(call, row["id"], before)
        raise
    if updated is None:  # deleted meanwhile
        await facade(call.app.schedule.remove, row["id"])
        raise ApiError(404, "not_found", f"no programme {row['id']!r}")
    return 200, _view(call, updated, _next_starts(call))


async def delete_programme(call: Call) -> Reply:
    row = await _row(call)
    call.authorize(Action.WRITE, *row["zones"])
    await call.storage.programmes.delete(call.actor, row["id"])
    await facade(call.app.schedule.remove, row["id"])
    return 204, None


ID = Param("id", "the programme's id", where="path", required=True)
ROUTES = [
    Route("GET", "/api/v1/programmes", list_programmes,
          "Scheduled programmes visible to the caller, with their next start times", Page[Programme], paged=True),
    Route("POST", "/api/v1/programmes", create_programme,
          "Schedule a playlist of media, or a relay of the library, on target zones, once or recurring; "
          "a clash with another programme on a "
          "shared channel is refused with 409 naming it", Programme, 201, ProgrammeCreate, errors=(403, 409)),
    Route("GET", "/api/v1/programmes/{id}", get_programme, "One programme", Programme, errors=(403, 404),
          query=(ID,)),
    Route("PUT", "/api/v1/programmes/{id}", replace_programme,
          "Change a programme (every field, as for creating it); a clash with another programme is refused "
          "with 409 naming it, and the programme stays as it was", Programme, 200, ProgrammeCreate,
          errors=(403, 404, 409), query=(ID,)),
    Route("DELETE", "/api/v1/programmes/{id}", delete_programme,
          "Remove a programme from the schedule (a play in progress finishes)", None, 204, errors=(403, 404),
          query=(ID,)),
]
