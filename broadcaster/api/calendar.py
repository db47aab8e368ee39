"""/api/v1/calendar: one channel's programmes and bulletins over a window (the console's week).

From what control holds: the schedule's occurrences and the bulletin desk's approved bulletins,
their plans expanded over the window (no SQL). A bulletin's end is not known here (its audio's
length); the calendar shows it at its start."""

from __future__ import annotations

from broadcaster.api.call import ApiError, Call, Param, Reply, Route, time_query
from broadcaster.api.models import Calendar, CalendarEntry
from broadcaster.control.bulletin_plan import Plan, PlanError
from broadcaster.control.bulletin_rules import CLASS_PRIORITY
from broadcaster.core.mixer import PRIORITY_NAMES

MAX_SPAN_S = 8 * 86400  # a week, and a day of margin for the browser's time zone


async def calendar(call: Call) -> Reply:
    channel_id = call.query.get("channel", "")
    channel = call.app.channels.get(channel_id)
    if channel is None or not call.may_see(channel.config.zone):
        raise ApiError(400, "bad_reference", f"channel: no channel {channel_id!r}")
    now = call.app.wall()
    start = time_query(call.query, "from", now)
    end = time_query(call.query, "to", start + 7 * 86400)
    if not 0 < end - start <= MAX_SPAN_S:
        raise ApiError(400, "bad_query", "'to' must be after 'from', and at most 8 days after it")
    items = [CalendarEntry(kind="programme", id=o.programme.id, title=o.programme.title, start=o.start, end=o.end,
                           priority=o.programme.priority, recurrence=o.programme.recurrence)
             for o in call.app.schedule.occurrences(start, end) if channel_id in o.programme.channels]
    tz = call.app.schedule.tz
    for row in list(call.app.bulletins.active.values()):
        if channel_id not in call.app.channels_in(row["zones"]):
            continue
        try:
            plan = Plan.parse(row["plan"])
        except PlanError:
            continue  # stored before today's checks: the desk logs it when it plays
        priority = int(PRIORITY_NAMES[CLASS_PRIORITY.get(row["class"], "scheduled")])
        for slot in plan.slots(tz, start, end, valid_from=row["valid_from"], valid_until=row["valid_until"],
                               asap_at=row["approved_at"]):
            items.append(CalendarEntry(kind="bulletin", id=row["id"], title=row["title"], start=slot, end=None,
                                       priority=priority, recurrence=None))
    items.sort(key=lambda e: (e.start, e.id))
    return 200, Calendar(channel=channel_id, timezone=call.app.config.schedule.timezone, start=start, end=end,
                         items=items)


ROUTES = [
    Route("GET", "/api/v1/calendar", calendar,
          "One channel's programme airings and bulletin slots between two times (at most 8 days): the week "
          "calendar", Calendar, errors=(400,),
          query=(Param("channel", "the channel's id", required=True),
                 Param("from", "start: Unix seconds or ISO 8601 (default now)"),
                 Param("to", "end: Unix seconds or ISO 8601 (default a week after from)"))),
]
