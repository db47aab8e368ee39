"""Alerts on air, kept so that a crash does not leave a province's loudspeakers
half-alerted: one row from the moment an alert is accepted until it ends.

At start, control (control/alerts.py ``recover``) reads what a crash left and
either plays each alert again or tells its loudspeakers to go back to normal.
The row is written at once, off the loop (``on_air``); if that fails (the
disk is full) it is queued with the broadcast log's rows and written with the
next flush. The DELETE that ends it (``off_air``) waits until the INSERT has
settled (control/alerts.py chains it): if the INSERT was written, the DELETE
is written at once (queued if that fails); if the INSERT was queued, the
DELETE is queued behind it, never written ahead of it. Written at
once, because a cancelled alert whose DELETE still waited in the queue when
the server died would play again at the next start. A row
whose spec cannot be read is logged and dropped: one bad row never keeps the
others from being recovered.

When an alert ends, ``result`` writes its row of alert_results (migration 9:
loudspeakers commanded and acknowledged, in total and per loudspeaker zone),
the same way: at once, or queued behind the broadcast log if that fails.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.storage.db import Database, rows
from broadcaster.storage.logs import LogRepository

log = logging.getLogger(__name__)

INSERT = "INSERT OR REPLACE INTO alerts_on_air (id, started_at, expires_at, spec) VALUES (?,?,?,?)"
DELETE = "DELETE FROM alerts_on_air WHERE id = ?"
# An alert resumed after a crash keeps its id: its result replaces the one written when it was cut short.
RESULT = ("INSERT OR {how} INTO alert_results (id, title, zones, priority, bulletin, started_at, ended_at, "
          "commanded, acknowledged, by_zone) VALUES (?,?,?,?,?,?,?,?,?,?)")


class AlertRepository:
    def __init__(self, db: Database, logs: LogRepository) -> None:
        self.db = db
        self.logs = logs

    def on_air(self, alert_id: str, started_at: float, expires_at: float | None,
               spec: dict[str, Any]) -> Deferred[bool]:
        """Written now, or queued if that fails; fires True if written, False if queued."""
        args = (alert_id, started_at, expires_at, json.dumps(spec, ensure_ascii=False))
        return self.logs.write_or_queue(f"alerts.on_air {alert_id}", INSERT, args)

    def off_air(self, alert_id: str, inserted: bool = True) -> Deferred[bool] | None:
        """Deleted now (queued if that fails); queued at once if its INSERT was (``inserted``
        False), so it comes after it."""
        if not inserted:
            self.logs.enqueue(DELETE, (alert_id,))
            return None
        return self.logs.write_or_queue(f"alerts.off_air {alert_id}", DELETE, (alert_id,))

    def result(self, alert_id: str, *, title: str, zones: list[str], priority: int, bulletin: str | None,
               started_at: float, ended_at: float | None, by_zone: dict[str, tuple[int, int]],
               replace: bool = True) -> Deferred[bool]:
        """How an alert went, for the yearly report (storage/reports.py): its loudspeakers commanded
        and acknowledged, per loudspeaker zone. Written now, or queued if that fails (never lost to
        a full disk while the server runs); fires True if written, False if queued. ``replace``
        False keeps a row already there (what a crash left is known less well than what was written)."""
        commanded = sum(c for c, _ in by_zone.values())
        acknowledged = sum(a for _, a in by_zone.values())
        args = (alert_id, title, json.dumps(zones, ensure_ascii=False), priority, bulletin, started_at, ended_at,
                commanded, acknowledged, json.dumps({z: list(n) for z, n in sorted(by_zone.items())}))
        sql = RESULT.format(how="REPLACE" if replace else "IGNORE")
        return self.logs.write_or_queue(f"alerts.result {alert_id}", sql, args)

    def on_air_sync(self) -> list[dict[str, Any]]:
        """What was on air when the server last stopped (nothing, after a clean stop)."""
        found = []
        for row in self.db.run_sync(lambda conn: rows(conn, "SELECT id, started_at, expires_at, spec "
                                                            "FROM alerts_on_air ORDER BY started_at")):
            try:
                spec = json.loads(row["spec"])
                if not isinstance(spec, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                log.error("alert %s left on air: its stored spec is unreadable (%s); dropped", row["id"], exc)
                self.off_air_sync(row["id"])
                continue
            found.append({**row, "spec": spec})
        return found

    def off_air_sync(self, alert_id: str) -> None:
        self.db.run_sync(lambda conn: conn.execute(DELETE, (alert_id,)))
