"""The yearly figures a commune sends to the province: hours on air by kind of
content, and how much of the time its loudspeakers were online.

Intervals are clipped to the report window; an entry still open (a programme
on air now, a loudspeaker online now) counts up to ``now``. The clipping and
the sums are SQL aggregates (``SUM(MAX(0, MIN(end, hi) - MAX(start, lo)))``
grouped by zone and kind), so a year of a province's rows is three queries
returning one row per zone, never a Python list of the rows themselves.

Loop side (Deferred): ``ReportRepository.broadcast`` (in the database's
"reports" pool). Sync (CLI, tests): ``ReportRepository.broadcast_sync`` and
``broadcast_report(storage_or_db, ...)``. ``report_csv`` formats either.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from broadcaster.storage.db import Database

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
