"""The yearly figures a commune sends to the province: hours on air by kind of
content, and how much of the time its loudspeakers were online.

Intervals are clipped to the report window; an entry still open (a programme
on air now, a loudspeaker online now) counts up to ``now``. The clipping and
the sums are SQL aggregates (``SUM(MAX(0, MIN(end, hi) - MAX(start, lo)))``
grouped by zone and kind), so a year of a province's rows is three queries
returning one row per zone, never a Python list of the rows themselves.

The yearly report the rules ask for (``yearly_report_txn``, docs/reports.md)
is built the same way: each figure is one aggregate grouped by commune, the
zone-to-commune map handed to SQL as JSON (``json_each``), so a province's
year is about ten statements whose results have a row per commune (and per
kind, source, bulletin class or category), whatever the number of rows. Its
period is ``report_year``: the report year 2025 is 15/12/2024 00:00 to
15/12/2025 00:00 local time by default (``reports.year_starts``).

Loop side (Deferred): ``ReportRepository.broadcast`` and ``yearly`` (in the
database's "reports" pool). Sync (CLI, tests): ``broadcast_sync``,
``yearly_sync``, and ``broadcast_report(storage_or_db, ...)``. ``report_csv``
formats the broadcast report; control/report_files.py the yearly one.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import sqlite3
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Protocol
from zoneinfo import ZoneInfo

from twisted.internet.defer import Deferred

from broadcaster.storage.db import Database
from broadcaster.storage.logs import SOURCES

if TYPE_CHECKING:
    from broadcaster.control.auth import ZoneTree

# :lo, :hi the window; :now closes what is still open; :zones a JSON list of zone ids.
_CLIPPED = "MAX(0.0, MIN(COALESCE(ended_at, :now), :hi) - MAX(started_at, :lo))"
_IN_WINDOW = ("zone IN (SELECT value FROM json_each(:zones)) AND started_at < :hi "
              "AND (ended_at IS NULL OR ended_at > :lo)")
ON_AIR_SQL = f"SELECT zone, kind, SUM({_CLIPPED}) AS seconds FROM broadcast_log WHERE {_IN_WINDOW} GROUP BY zone, kind"
ONLINE_SQL = f"SELECT zone, SUM({_CLIPPED}) AS seconds FROM speaker_sessions WHERE {_IN_WINDOW} GROUP BY zone"
SPEAKERS_SQL = ("SELECT zone, COUNT(*) AS n FROM loudspeakers WHERE zone IN (SELECT value FROM json_each(:zones)) "
                "GROUP BY zone")


def broadcast_report_txn(conn: sqlite3.Connection, zones: ZoneTree, zone: str, start: float, end: float,
                         now: float) -> dict[str, Any]:
    params = {"zones": json.dumps(sorted(zones.subtree(zone))), "lo": start, "hi": end, "now": now}
    communes: dict[str, dict[str, Any]] = {}

    def commune(z: str) -> dict[str, Any]:
        c = zones.commune_of(z)
        if c not in communes:
            communes[c] = {"zone": c, "name": zones.names.get(c, c), "on_air_s": defaultdict(float),
                           "loudspeakers": 0, "online_s": 0.0}
        return communes[c]

    for z, kind, seconds in conn.execute(ON_AIR_SQL, params):
        commune(z)["on_air_s"][kind] += seconds
    for z, n in conn.execute(SPEAKERS_SQL, params):
        commune(z)["loudspeakers"] += n
    for z, seconds in conn.execute(ONLINE_SQL, params):
        commune(z)["online_s"] += seconds
    window_h = (min(end, now) - start) / 3600 if min(end, now) > start else 0.0
    out = []
    for c in sorted(communes.values(), key=lambda c: c["zone"]):
        possible = c["loudspeakers"] * window_h
        hours = {k: v / 3600 for k, v in c["on_air_s"].items()}
        out.append({
            "zone": c["zone"], "name": c["name"],
            "hours_on_air": {k: round(v, 4) for k, v in sorted(hours.items())},
            "hours_on_air_total": round(sum(hours.values()), 4),
            "loudspeakers": c["loudspeakers"],
            "availability": round(min(1.0, c["online_s"] / 3600 / possible), 4) if possible else None,
        })
    return {"zone": zone, "from": start, "to": end, "communes": out}


class _HasDb(Protocol):
    db: Database


def broadcast_report(source: Database | _HasDb, zones: ZoneTree, zone: str, start: float, end: float,
                     now: float) -> dict[str, Any]:
    """Sync: on the calling thread (CLI, tests). ``source`` is a Database or the old Storage."""
    db = source if isinstance(source, Database) else source.db
    with db.transaction(write=False) as conn:
        return broadcast_report_txn(conn, zones, zone, start, end, now)


class ReportRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    def broadcast(self, zones: ZoneTree, zone: str, start: float, end: float, now: float) -> Deferred[dict[str, Any]]:
        """The report for ``zone``'s subtree over [start, end), in the reports pool."""
        return self.db.report("reports.broadcast", broadcast_report_txn, zones, zone, start, end, now)

    def broadcast_sync(self, zones: ZoneTree, zone: str, start: float, end: float, now: float) -> dict[str, Any]:
        return broadcast_report(self.db, zones, zone, start, end, now)

    def yearly(self, zones: ZoneTree, zone: str, year: int, tz: str, starts: str,
               now: float) -> Deferred[dict[str, Any]]:
        """The yearly report of ``zone``'s subtree for the report year ``year``, in the reports pool."""
        return self.db.report("reports.yearly", yearly_year_txn, zones, zone, year, tz, starts, now)

    def yearly_sync(self, zones: ZoneTree, zone: str, year: int, tz: str, starts: str,
                    now: float) -> dict[str, Any]:
        with self.db.transaction(write=False) as conn:
            return yearly_year_txn(conn, zones, zone, year, tz, starts, now)


def report_csv(report: dict[str, Any]) -> str:
    kinds = sorted({k for row in report["communes"] for k in row["hours_on_air"]})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["zone", "name", *[f"hours_{k}" for k in kinds], "hours_total", "loudspeakers",
                     "availability"])
    for row in report["communes"]:
        writer.writerow([row["zone"], row["name"], *[row["hours_on_air"].get(k, 0) for k in kinds],
                         row["hours_on_air_total"], row["loudspeakers"],
                         "" if row["availability"] is None else row["availability"]])
    return out.getvalue()


# --- the yearly report -------------------------------------------------------------------------

KINDS = ("scheduled", "announcement", "emergency", "live", "alert", "relay")  # always reported, then any other
CLASSES = ("thong-thuong", "uu-tien", "khan-cap")  # a bulletin's class (migration 9)
NOT_PLAYED = ("failed", "refused", "skipped")  # a bulletin play with one of these outcomes was not heard
ALERT_ROWS = 1000  # alerts listed one by one (the figures count them all)


def report_year(year: int, tz: str, starts: str = "12-15") -> tuple[float, float]:
    """The report year ``year`` as [start, end) in Unix seconds: from ``starts`` (MM-DD, local
    midnight in ``tz``) to the same day a year later. It is named for the year its last day
    falls in: with the default 12-15, 2025 is 15/12/2024 00:00 to 15/12/2025 00:00, so
    14/12/2025 is its last day; with 01-01 it is the calendar year."""
    month, day = int(starts[:2]), int(starts[3:])
    first = year if (month, day) == (1, 1) else year - 1
    zone = ZoneInfo(tz)
    start = datetime.datetime(first, month, day, tzinfo=zone)
    end = datetime.datetime(first + 1, month, day, tzinfo=zone)
    return start.timestamp(), end.timestamp()


def report_year_of(at: float, tz: str, starts: str = "12-15") -> int:
    """The report year that ``at`` (Unix seconds) falls in."""
    year = datetime.datetime.fromtimestamp(at, ZoneInfo(tz)).year
    start, end = report_year(year, tz, starts)
    return year + 1 if at >= end else year - 1 if at < start else year


def _units(zones: ZoneTree, zone: str) -> tuple[set[str], dict[str, str], list[list[str]]]:
    """The rows of the report and how zones reach them: (the communes listed even when empty,
    zone -> the row its stations, loudspeakers and log rows count in, [target zone, row] pairs
    for what targets zones). A target covers a commune if it lies inside it or contains it; a
    row that is not a commune (a station at province level) counts only targets naming it."""
    subtree = zones.subtree(zone)
    row_of = {z: zones.commune_of(z) for z in subtree}
    rows = set(row_of.values())
    # With a report on a hamlet, its row is its commune's, and so are the targets that reach it.
    communes = {z for z in subtree | rows if zones.kinds.get(z) in ("commune", "ward")}
    touches: set[tuple[str, str]] = {(r, r) for r in rows}
    for z in zones.parents:
        for above in zones.ancestors(z):
            if above in communes:  # z lies in a listed commune
                touches.add((z, above))
    for c in communes:
        for above in zones.ancestors(c):  # a district, the province: they cover the commune
            touches.add((above, c))
    return communes, row_of, [list(t) for t in sorted(touches)]


# :lo, :hi the window; :now closes what is still open; :rows a JSON object zone -> row;
# :touches a JSON list of [target zone, row]. CROSS JOIN keeps the table outer and the map inner (looked
# up by SQLite's automatic index): the other way round, a year of rows is scanned once per zone.
_MAPS = ("WITH row_of(zone, unit) AS MATERIALIZED (SELECT key, value FROM json_each(:rows)), "
         "touch(zone, unit) AS MATERIALIZED (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') "
         "FROM json_each(:touches)) ")
_OVERLAPS = "t.started_at < :hi AND (t.ended_at IS NULL OR t.ended_at > :lo)"
_STARTED = "t.started_at >= :lo AND t.started_at < :hi"  # an event is counted in the year it began
_CLIPPED_T = "MAX(0.0, MIN(COALESCE(t.ended_at, :now), :hi) - MAX(t.started_at, :lo))"

YEARLY_SQL = {
    "stations": _MAPS + "SELECT m.unit, COUNT(*) FROM channels t CROSS JOIN row_of m ON m.zone = t.zone "
                        "GROUP BY m.unit",
    "clusters": _MAPS + "SELECT m.unit, COUNT(*) FROM loudspeakers t CROSS JOIN row_of m ON m.zone = t.zone "
                        "GROUP BY m.unit",
    "online": _MAPS + f"SELECT m.unit, SUM({_CLIPPED_T}) FROM speaker_sessions t "
                      "CROSS JOIN row_of m ON m.zone = t.zone "
                      f"WHERE {_OVERLAPS} GROUP BY m.unit",
    "on_air": _MAPS + f"SELECT m.unit, t.kind, t.source, SUM({_CLIPPED_T}) FROM broadcast_log t "
                      f"CROSS JOIN row_of m ON m.zone = t.zone WHERE {_OVERLAPS} GROUP BY m.unit, t.kind, t.source",
    # The rows of one live session (one per channel) share its item, start and author. A NULL unit is the total.
    "live": _MAPS + "SELECT {unit}, COUNT(DISTINCT t.item || '|' || t.started_at || '|' || t.started_by) "
                    f"FROM broadcast_log t CROSS JOIN row_of m ON m.zone = t.zone WHERE t.kind = 'live' AND {_STARTED}",
    "played": _MAPS + "SELECT {unit}, b.class, b.category, COUNT(DISTINCT t.bulletin) FROM bulletin_plays t "
                      "CROSS JOIN row_of m ON m.zone = t.zone JOIN bulletins b ON b.id = t.bulletin "
                      f"WHERE {_STARTED} AND COALESCE(t.outcome, '') NOT IN {NOT_PLAYED!r}",
    "approved": _MAPS + "SELECT {unit}, COUNT(DISTINCT b.id) FROM bulletins b CROSS JOIN json_each(b.zones) z "
                        "CROSS JOIN touch m ON m.zone = z.value WHERE b.approved_at >= :lo AND b.approved_at < :hi",
    "alerts": _MAPS + "SELECT {unit}, COUNT(DISTINCT t.id) FROM alert_results t CROSS JOIN json_each(t.zones) z "
                      f"CROSS JOIN touch m ON m.zone = z.value WHERE {_STARTED}",
    "alert_devices": _MAPS + "SELECT m.unit, SUM(json_extract(d.value, '$[0]')), SUM(json_extract(d.value, '$[1]')) "
                             "FROM alert_results t CROSS JOIN json_each(t.by_zone) d "
                             "CROSS JOIN row_of m ON m.zone = d.key "
                             f"WHERE {_STARTED} GROUP BY m.unit",
    "alert_list": _MAPS + "SELECT t.id, t.title, t.zones, t.priority, t.bulletin, t.started_at, t.ended_at, "
                          "(SELECT COALESCE(SUM(json_extract(d.value, '$[0]')), 0) FROM json_each(t.by_zone) d "
                          " CROSS JOIN row_of m ON m.zone = d.key), "
                          "(SELECT COALESCE(SUM(json_extract(d.value, '$[1]')), 0) FROM json_each(t.by_zone) d "
                          " CROSS JOIN row_of m ON m.zone = d.key) "
                          f"FROM alert_results t WHERE {_STARTED} AND EXISTS (SELECT 1 FROM json_each(t.zones) z "
                          "CROSS JOIN touch m ON m.zone = z.value) ORDER BY t.started_at, t.id LIMIT :limit",
}


def _per_unit_and_total(sql: str, extra_group: str = "") -> str:
    """One statement, two aggregates: per row (GROUP BY the unit) and for the whole report (unit
    NULL), so what is counted once per row is also counted once in the total."""
    group = f", {extra_group}" if extra_group else ""
    return (sql.format(unit="m.unit") + f" GROUP BY m.unit{group} UNION ALL "
            + sql.replace(_MAPS, "").format(unit="NULL") + (f" GROUP BY {extra_group}" if extra_group else ""))


def _share(part: float, whole: float) -> float | None:
    return round(min(1.0, part / whole), 4) if whole else None


def yearly_report_txn(conn: sqlite3.Connection, zones: ZoneTree, zone: str, start: float, end: float,
                      now: float) -> dict[str, Any]:
    """The yearly figures of ``zone``'s subtree over [start, end): a row per commune (and per
    zone above communes that has stations or loudspeakers of its own), and ``total`` for the
    whole subtree. Durations are clipped to the window (what is open counts up to ``now``);
    events (live sessions, bulletin plays, approvals, alerts) count in the window they began in.
    In ``total`` a bulletin or an alert that reached several communes counts once."""
    communes, row_of, touches = _units(zones, zone)
    params: dict[str, Any] = {"rows": json.dumps(row_of), "touches": json.dumps(touches), "lo": start, "hi": end,
                              "now": now, "limit": ALERT_ROWS + 1}
    rows: dict[str | None, dict[str, Any]] = {}

    def row(unit: str | None) -> dict[str, Any]:
        if unit not in rows:
            name = zone if unit is None else unit
            rows[unit] = {"zone": name, "name": zones.names.get(name, name), "stations": 0,
                          "loudspeaker_clusters": 0, "online_s": 0.0, "on_air_s": defaultdict(float),
                          "source_s": defaultdict(float), "bulletins_played": 0, "bulletins_approved": 0,
                          "bulletins_by_class": defaultdict(int), "bulletins_by_category": defaultdict(int),
                          "alerts": 0, "commanded": 0, "acknowledged": 0, "live_sessions": 0}
        return rows[unit]

    row(None)
    for c in sorted(communes):
        row(c)
    for unit, n in conn.execute(YEARLY_SQL["stations"], params):
        row(unit)["stations"] += n
    for unit, n in conn.execute(YEARLY_SQL["clusters"], params):
        row(unit)["loudspeaker_clusters"] += n
    for unit, seconds in conn.execute(YEARLY_SQL["online"], params):
        row(unit)["online_s"] += seconds
    for unit, kind, source, seconds in conn.execute(YEARLY_SQL["on_air"], params):
        row(unit)["on_air_s"][kind] += seconds
        row(unit)["source_s"][source] += seconds
    for unit, n in conn.execute(_per_unit_and_total(YEARLY_SQL["live"]), params):
        row(unit)["live_sessions"] += n
    for unit, cls, category, n in conn.execute(_per_unit_and_total(YEARLY_SQL["played"], "b.class, b.category"),
                                               params):
        r = row(unit)
        r["bulletins_played"] += n  # a bulletin has one class and one category: the groups are disjoint
        r["bulletins_by_class"][cls] += n
        r["bulletins_by_category"][category] += n
    for unit, n in conn.execute(_per_unit_and_total(YEARLY_SQL["approved"]), params):
        row(unit)["bulletins_approved"] += n
    for unit, n in conn.execute(_per_unit_and_total(YEARLY_SQL["alerts"]), params):
        row(unit)["alerts"] += n
    for unit, commanded, acknowledged in conn.execute(YEARLY_SQL["alert_devices"], params):
        row(unit)["commanded"] += commanded or 0
        row(unit)["acknowledged"] += acknowledged or 0
    alert_list = [{"id": a, "title": title, "zones": json.loads(targets), "priority": priority, "bulletin": bulletin,
                   "started_at": started, "ended_at": ended, "loudspeakers_commanded": commanded,
                   "loudspeakers_acknowledged": acknowledged, "acknowledged_share": _share(acknowledged, commanded)}
                  for a, title, targets, priority, bulletin, started, ended, commanded, acknowledged
                  in conn.execute(YEARLY_SQL["alert_list"], params)]

    total = rows[None]
    # A row that is not a commune (stations or loudspeakers above communes) is listed only if
    # something is there; what only targeted it (an alert to the whole province) is in the total.
    units = [rows[u] for u in sorted(u for u in rows if u is not None)
             if u in communes or any(rows[u][k] for k in ("stations", "loudspeaker_clusters", "on_air_s",
                                                          "bulletins_played", "live_sessions"))]
    for r in units:  # what adds up is the sum of the rows; what is counted once came from SQL
        for key in ("stations", "loudspeaker_clusters", "online_s", "commanded", "acknowledged"):
            total[key] += r[key]
        for key in ("on_air_s", "source_s"):
            for k, v in r[key].items():
                total[key][k] += v
    kinds = [*KINDS, *sorted({k for r in units for k in r["on_air_s"]} - set(KINDS))]
    categories = sorted({k for r in rows.values() for k in r["bulletins_by_category"]})
    classes = [*CLASSES, *sorted({k for r in rows.values() for k in r["bulletins_by_class"]} - set(CLASSES))]
    window_h = max(0.0, min(end, now) - start) / 3600

    def shaped(r: dict[str, Any]) -> dict[str, Any]:
        hours = {k: round(r["on_air_s"].get(k, 0.0) / 3600, 4) for k in kinds}
        return {
            "zone": r["zone"], "name": r["name"], "stations": r["stations"],
            "loudspeaker_clusters": r["loudspeaker_clusters"],
            "clusters_online_share": _share(r["online_s"] / 3600, r["loudspeaker_clusters"] * window_h),
            "hours_on_air": round(sum(r["on_air_s"].values()) / 3600, 4),
            "hours_by_class": hours,
            "hours_by_source": {k: round(r["source_s"].get(k, 0.0) / 3600, 4)
                                for k in [*SOURCES, *sorted(set(r["source_s"]) - set(SOURCES))]},
            "bulletins_played": r["bulletins_played"], "bulletins_approved": r["bulletins_approved"],
            "bulletins_by_class": {k: r["bulletins_by_class"].get(k, 0) for k in classes},
            "bulletins_by_category": {k: r["bulletins_by_category"].get(k, 0) for k in categories},
            "alerts": r["alerts"], "alert_loudspeakers_commanded": r["commanded"],
            "alert_loudspeakers_acknowledged": r["acknowledged"],
            "alert_acknowledged_share": _share(r["acknowledged"], r["commanded"]),
            "live_sessions": r["live_sessions"], "live_hours": hours["live"],
        }

    return {"zone": zone, "name": zones.names.get(zone, zone), "from": start, "to": end, "generated_at": now,
            "communes": [shaped(r) for r in units], "total": shaped(total),
            "alert_list": alert_list[:ALERT_ROWS], "alert_list_truncated": len(alert_list) > ALERT_ROWS}


def yearly_year_txn(conn: sqlite3.Connection, zones: ZoneTree, zone: str, year: int, tz: str, starts: str,
                    now: float) -> dict[str, Any]:
    """``yearly_report_txn`` over the report year ``year``, with its period in words."""
    start, end = report_year(year, tz, starts)
    report = yearly_report_txn(conn, zones, zone, start, end, now)
    local = ZoneInfo(tz)
    last = datetime.datetime.fromtimestamp(end, local).date() - datetime.timedelta(days=1)
    return {"year": year, "timezone": tz, "first_day": datetime.datetime.fromtimestamp(start, local).date().isoformat(),
            "last_day": last.isoformat(), **report}
