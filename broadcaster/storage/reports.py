"""The yearly figures a commune sends to the province: hours on air by kind of
content, and how much of the time its loudspeakers were online.

Intervals are clipped to the report window; an entry still open (a programme
on air now, a loudspeaker online now) counts up to ``now``.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from typing import Any

from broadcaster.control.auth import ZoneTree
from broadcaster.storage import Storage


def _overlap(start: float, end: float | None, lo: float, hi: float, now: float) -> float:
    return max(0.0, min(end if end is not None else now, hi) - max(start, lo))


def broadcast_report(storage: Storage, zones: ZoneTree, zone: str, start: float, end: float,
                     now: float) -> dict[str, Any]:
    subtree = zones.subtree(zone)
    marks = ",".join("?" * len(subtree))
    args = sorted(subtree)
    communes: dict[str, dict[str, Any]] = {}

    def commune(z: str) -> dict[str, Any]:
        c = zones.commune_of(z)
        if c not in communes:
            communes[c] = {"zone": c, "name": zones.names.get(c, c), "hours_on_air": defaultdict(float),
                           "loudspeakers": 0, "online_hours": 0.0}
        return communes[c]

    for row in storage.query(f"SELECT zone, kind, started_at, ended_at FROM broadcast_log WHERE zone IN ({marks}) "
                             "AND started_at < ? AND (ended_at IS NULL OR ended_at > ?)", (*args, end, start)):
        commune(row["zone"])["hours_on_air"][row["kind"]] += _overlap(row["started_at"], row["ended_at"],
                                                                      start, end, now) / 3600
    for row in storage.query(f"SELECT zone FROM loudspeakers WHERE zone IN ({marks})", args):
        commune(row["zone"])["loudspeakers"] += 1
    for row in storage.query(f"SELECT zone, started_at, ended_at FROM speaker_sessions WHERE zone IN ({marks}) "
                             "AND started_at < ? AND (ended_at IS NULL OR ended_at > ?)", (*args, end, start)):
        commune(row["zone"])["online_hours"] += _overlap(row["started_at"], row["ended_at"], start, end, now) / 3600
    window_h = (min(end, now) - start) / 3600 if min(end, now) > start else 0.0
    rows = []
    for c in sorted(communes.values(), key=lambda c: c["zone"]):
        possible = c["loudspeakers"] * window_h
        rows.append({
            "zone": c["zone"], "name": c["name"],
            "hours_on_air": {k: round(v, 4) for k, v in sorted(c["hours_on_air"].items())},
            "hours_on_air_total": round(sum(c["hours_on_air"].values()), 4),
            "loudspeakers": c["loudspeakers"],
            "availability": round(min(1.0, c["online_hours"] / possible), 4) if possible else None,
        })
    return {"zone": zone, "from": start, "to": end, "communes": rows}


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
