"""/api/v1/reports/broadcast: hours on air and availability per commune, JSON or CSV;
/api/v1/reports/yearly: the yearly report the rules ask for (15/12 to 14/12), JSON, CSV or XLSX.

Computed by SQL aggregates in the database's reports pool (storage.reports):
never on the reactor, never a Python list of a year's rows. The XLSX workbook
is built in that pool too (control/report_files.py)."""

from __future__ import annotations

from broadcaster.api.call import ApiError, Call, Param, Raw, Reply, Route, int_query, time_query
from broadcaster.api.models import Report, YearlyReport
from broadcaster.control.auth import Action
from broadcaster.control.report_files import XLSX_TYPE, yearly_csv, yearly_xlsx
from broadcaster.storage.reports import report_csv, report_year_of

YEAR_S = 365 * 86400


def _zone(call: Call) -> str:
    """The zone asked for (default: the province), which the caller may read."""
    zones = call.app.zones
    zone = call.query.get("zone") or next((z for z, p in zones.parents.items() if p is None), "")
    if zone not in zones:
        raise ApiError(400, "bad_reference", f"no zone {zone!r}")
    call.authorize(Action.READ, zone)
    return zone


async def report(call: Call) -> Reply:
    zones = call.app.zones
    zone = _zone(call)
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


async def yearly(call: Call) -> Reply:
    zones = call.app.zones
    zone = _zone(call)
    now = call.app.wall()
    tz, starts = call.app.config.schedule.timezone, call.app.config.reports.year_starts
    year = int_query(call.query, "year", report_year_of(now, tz, starts), 2000, 2100)
    fmt = call.query.get("format", "json")
    if fmt not in ("json", "csv", "xlsx"):
        raise ApiError(400, "bad_query", "format must be json, csv or xlsx")
    await call.storage.logs.settle()
    result = await call.storage.reports.yearly(zones, zone, year, tz, starts, now)
    name = f"report-{year}-{zone}"
    if fmt == "csv":
        call.request.setHeader(b"Content-Disposition", f'attachment; filename="{name}.csv"'.encode("ascii"))
        return 200, Raw("text/csv; charset=utf-8", yearly_csv(result))
    if fmt == "xlsx":
        workbook = await call.storage.db.offload("reports", yearly_xlsx, result)
        call.request.setHeader(b"Content-Disposition", f'attachment; filename="{name}.xlsx"'.encode("ascii"))
        return 200, Raw(XLSX_TYPE, workbook)
    return 200, YearlyReport.model_validate(result)


ROUTES = [
    Route("GET", "/api/v1/reports/broadcast", report,
          "Hours on air per commune and kind of content, and loudspeaker availability", Report, errors=(400, 403),
          csv=True,
          query=(Param("zone", "limit to this zone's subtree"),
                 Param("from", "ISO 8601 date/time or Unix seconds (inclusive); default a year ago"),
                 Param("to", "ISO 8601 date/time or Unix seconds (exclusive); default now"),
                 Param("format", "json (default) or csv", {"type": "string", "enum": ["json", "csv"]}))),
    Route("GET", "/api/v1/reports/yearly", yearly,
          "The yearly report per commune and for the zone: stations, loudspeaker clusters online, hours on air by "
          "class and source, bulletins, alerts, live sessions (docs/reports.md)", YearlyReport, errors=(400, 403),
          csv=True, xlsx=True,
          query=(Param("year", "report year, 2000-2100: 2025 is 15/12/2024 to 14/12/2025 (reports.year_starts); "
                               "default the one that contains today",
                       {"type": "integer", "minimum": 2000, "maximum": 2100}),
                 Param("zone", "limit to this zone's subtree (default: the province)"),
                 Param("format", "json (default), csv or xlsx", {"type": "string", "enum": ["json", "csv", "xlsx"]}))),
]
