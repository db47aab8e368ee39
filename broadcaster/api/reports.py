"""/api/v1/reports/broadcast: hours on air and availability per commune, JSON or CSV.

Computed by SQL aggregates in the database's reports pool (storage.reports):
never on the reactor, never a Python list of a year's rows."""

from __future__ import annotations

from broadcaster.api.call import ApiError, Call, Param, Raw, Reply, Route, time_query
from broadcaster.api.models import Report
from broadcaster.control.auth import Action
from broadcaster.storage.reports import report_csv

YEAR_S = 365 * 86400


async def report(call: Call) -> Reply:
    zones = call.app.zones
    zone = call.query.get("zone") or next((z for z, p in zones.parents.items() if p is None), "")
    if zone not in zones:
        raise ApiError(400, "bad_reference", f"no zone {zone!r}")
    call.authorize(Action.READ, zone)
    now = call.app.wall()
    start = time_query(call.query, "from", now - YEAR_S)
    end = time_query(call.query, "to", now)
    if end <= start:
        raise ApiError(400, "bad_query", "'to' must be after 'from'")
    fmt = call.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise ApiError(400, "bad_query", "format must be json or csv")
    await call.storage.logs.settle()
    result = await call.storage.reports.broadcast(zones, zone, start, end, now)
    if fmt == "csv":
        call.request.setHeader(b"Content-Disposition", b'attachment; filename="broadcast-report.csv"')
        return 200, Raw("text/csv; charset=utf-8", report_csv(result))
    return 200, Report.model_validate(result)


ROUTES = [
    Route("GET", "/api/v1/reports/broadcast", report,
          "Hours on air per commune and kind of content, and loudspeaker availability", Report, errors=(400, 403),
          csv=True,
          query=(Param("zone", "limit to this zone's subtree"),
                 Param("from", "ISO 8601 date/time or Unix seconds (inclusive); default a year ago"),
                 Param("to", "ISO 8601 date/time or Unix seconds (exclusive); default now"),
                 Param("format", "json (default) or csv", {"type": "string", "enum": ["json", "csv"]}))),
]
