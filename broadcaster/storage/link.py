"""The province link's SQL (broadcaster/link/): both sides of it.

As a commune (downstream): ``imports`` (the upstream bulletins taken, by
their id and version, so a poll after a restart imports nothing twice) and
``cursors`` (what the upstream has acknowledged of the reporter's outbox:
plays by id, daily figures by day), ``plays_after`` (the outbox itself: the
bulletin_plays rows past the cursor), ``inventory`` and ``daily`` (the
figures that go up). As the province (upstream): ``feed_rows`` (the bulletins
that may go down), ``touch`` (each downstream's last pull, report, push and
error), ``store_report`` (plays upserted by the downstream's play id: a
report sent twice stores one row), and the operator's reads: ``results``,
``downstreams``, ``loudspeakers``, ``days``.

Everything is loop side (Deferred, in the storage pool) but ``*_sync``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.storage.db import Database, Page, one, page, rows

FEED_LIMIT = 500
WITHDRAWN_KEPT_S = 7 * 86400     # a withdrawn bulletin stays in the feed this long, so every downstream hears of it
EXPIRED_KEPT_S = 86400           # one past its validity this long


# --- the downstream side ---------------------------------------------------------------------

def _named(conn: sqlite3.Connection, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of a query with named parameters (db.rows takes positional ones)."""
    return [dict(r) for r in conn.execute(sql, params)]


def _imports(conn: sqlite3.Connection, origin: str) -> dict[str, dict[str, Any]]:
    return {r["upstream_id"]: r for r in rows(conn, "SELECT upstream_id, version, state, bulletin, imported_at "
                                                    "FROM link_imports WHERE origin = ?", (origin,))}


def _record_import(conn: sqlite3.Connection, origin: str, upstream_id: str, version: int, state: str,
                   bulletin: str | None, now: float) -> None:
    conn.execute("INSERT INTO link_imports (origin, upstream_id, version, state, bulletin, imported_at) "
                 "VALUES (?,?,?,?,?,?) ON CONFLICT (origin, upstream_id) DO UPDATE SET version = excluded.version, "
                 "state = excluded.state, bulletin = COALESCE(excluded.bulletin, bulletin), "
                 "imported_at = excluded.imported_at", (origin, upstream_id, version, state, bulletin, now))


def _cursors(conn: sqlite3.Connection) -> dict[str, str]:
    return {r["name"]: r["value"] for r in rows(conn, "SELECT name, value FROM link_cursors")}


def _set_cursors(conn: sqlite3.Connection, values: dict[str, str], now: float) -> None:
    for name, value in values.items():
        conn.execute("INSERT INTO link_cursors (name, value, updated_at) VALUES (?,?,?) ON CONFLICT (name) "
                     "DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at", (name, value, now))


def _plays_after(conn: sqlite3.Connection, after: int, origin: str, limit: int,
                 stale_before: float) -> tuple[list[dict[str, Any]], int]:
    """Ended plays past ``after`` whose bulletin came from ``origin``, and the new cursor.

    The cursor stops before the first play still running (it is reported once it ends), unless
    that play began before ``stale_before``: a play a crash left without an end goes up as it is,
    so one lost end never holds back every later report."""
    found = rows(conn, "SELECT p.id, p.bulletin, p.slot, p.channel, p.zone, p.started_at, p.ended_at, p.outcome, "
                       "p.online, p.acknowledged, b.origin, b.origin_id FROM bulletin_plays p "
                       "LEFT JOIN bulletins b ON b.id = p.bulletin WHERE p.id > ? ORDER BY p.id LIMIT ?",
                 (after, limit))
    out: list[dict[str, Any]] = []
    cursor = after
    for row in found:
        if row["ended_at"] is None and row["started_at"] >= stale_before:
            break
        cursor = row["id"]
        if row["origin"] == origin and row["origin_id"]:
            out.append(row)
    return out, cursor


def _inventory(conn: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    return rows(conn, "SELECT id, name, zone, channel, lat, lon FROM loudspeakers ORDER BY id LIMIT ?", (limit,))


def _daily(conn: sqlite3.Connection, days: Sequence[tuple[str, float, float]], now: float) -> list[dict[str, Any]]:
    """Per local day and channel: hours on air (the broadcast log, clipped to the day) and the share
    of its loudspeakers' possible online time they were online (speaker sessions, clipped)."""
    speakers = {r["channel"]: r["n"] for r in rows(conn, "SELECT channel, COUNT(*) AS n FROM loudspeakers "
                                                         "GROUP BY channel")}
    channels = {r["id"]: r["zone"] for r in rows(conn, "SELECT id, zone FROM channels")}
    out: list[dict[str, Any]] = []
    clipped = "SUM(MAX(0.0, MIN(COALESCE(ended_at, :now), :hi) - MAX(started_at, :lo)))"
    window = "started_at < :hi AND (ended_at IS NULL OR ended_at > :lo)"
    for day, lo, hi in days:
        params = {"lo": lo, "hi": hi, "now": now}
        # Entries of one channel may overlap (a bulletin over the loop): on air is their union's upper
        # bound, capped at the day's length.
        on_air = {r["channel"]: r["s"] for r in _named(
            conn, f"SELECT channel, {clipped} AS s FROM broadcast_log WHERE {window} GROUP BY channel", params)}
        online = {r["channel"]: r["s"] for r in _named(
            conn, f"SELECT channel, {clipped} AS s FROM speaker_sessions WHERE {window} GROUP BY channel", params)}
        span = max(0.0, min(hi, now) - lo)
        for channel, zone in sorted(channels.items()):
            n = speakers.get(channel, 0)
            possible = n * span
            out.append({"day": day, "channel": channel, "zone": zone,
                        "hours_on_air": min(span, on_air.get(channel) or 0.0) / 3600,
                        "loudspeakers": n,
                        "online_share": min(1.0, (online.get(channel) or 0.0) / possible) if possible else None})
    return out


# --- the upstream side ------------------------------------------------------------------------

def _feed_rows(conn: sqlite3.Connection, now: float) -> list[dict[str, Any]]:
    found = _named(conn, "SELECT b.id, b.title, b.summary, b.body, b.media, b.category, b.class, b.language, "
                       "b.valid_from, b.valid_until, b.zones, b.plan, b.source, b.state, b.version, b.created_at, "
                       "b.updated_at, m.duration_s AS media_duration_s "
                       "FROM bulletins b LEFT JOIN media m ON m.id = b.media "
                       "WHERE b.source IN ('local', 'province') AND (b.state IN ('approved', 'scheduled', 'played') "
                       "OR (b.state = 'withdrawn' AND COALESCE(b.updated_at, b.created_at) > :kept)) "
                       "AND (b.valid_until IS NULL OR b.valid_until > :expired) "
                       "ORDER BY b.created_at DESC, b.id LIMIT :n",
                   {"kept": now - WITHDRAWN_KEPT_S, "expired": now - EXPIRED_KEPT_S, "n": FEED_LIMIT})
    for row in found:
        row["zones"] = json.loads(row["zones"] or "[]")
        row["plan"] = json.loads(row["plan"] or "{}")
    return found


def _touch(conn: sqlite3.Connection, downstream: str, what: str, now: float, error: str | None = None,
           digest: str | None = None) -> None:
    assert what in ("pull", "report", "push", "error", "inventory")
    conn.execute("INSERT OR IGNORE INTO link_downstreams (id) VALUES (?)", (downstream,))
    if what == "error":
        conn.execute("UPDATE link_downstreams SET last_error = ?, last_error_at = ? WHERE id = ?",
                     (error, now, downstream))
    elif what == "push":
        conn.execute("UPDATE link_downstreams SET last_push_at = ?, push_digest = ? WHERE id = ?",
                     (now, digest, downstream))
    else:
        conn.execute(f"UPDATE link_downstreams SET last_{what}_at = ? WHERE id = ?" if what != "inventory" else
                     "UPDATE link_downstreams SET inventory_at = ? WHERE id = ?", (now, downstream))


def _store_report(conn: sqlite3.Connection, downstream: str, plays: list[dict[str, Any]],
                  inventory: list[dict[str, Any]] | None, days: list[dict[str, Any]], now: float) -> dict[str, int]:
    new = unknown = 0
    ids = sorted({p["bulletin"] for p in plays})
    ours = {r["id"] for r in rows(conn, f"SELECT id FROM bulletins WHERE id IN ({','.join('?' * len(ids))})", ids)}
    for p in plays:
        if p["bulletin"] not in ours:  # not a bulletin of this server: nothing to report it against
            unknown += 1
            continue
        before = conn.total_changes
        conn.execute(
            "INSERT INTO link_plays (downstream, play_id, bulletin, channel, area, slot, started_at, ended_at, "
            "duration_s, outcome, online, acknowledged, received_at) VALUES (:d, :play_id, :bulletin, :channel, "
            ":area, :slot, :started_at, :ended_at, :duration_s, :outcome, :online, :acknowledged, :now) "
            "ON CONFLICT (downstream, play_id) DO NOTHING", {**p, "d": downstream, "now": now})
        new += conn.total_changes - before
        if conn.total_changes == before:  # sent again: an end that came later is taken, nothing is added
            conn.execute("UPDATE link_plays SET ended_at = COALESCE(:ended_at, ended_at), duration_s = "
                         "COALESCE(:duration_s, duration_s), outcome = COALESCE(:outcome, outcome), "
                         "acknowledged = COALESCE(:acknowledged, acknowledged) WHERE downstream = :d "
                         "AND play_id = :play_id", {**p, "d": downstream})
    if inventory is not None:
        conn.execute("DELETE FROM link_loudspeakers WHERE downstream = ?", (downstream,))
        conn.executemany(
            "INSERT OR REPLACE INTO link_loudspeakers (downstream, id, name, area, channel, lat, lon, status, "
            "last_seen, reported_at) VALUES (:d, :id, :name, :area, :channel, :lat, :lon, :status, :last_seen, :now)",
            [{**s, "d": downstream, "now": now} for s in inventory])
        _touch(conn, downstream, "inventory", now)
    conn.executemany(
        "INSERT INTO link_daily (downstream, day, channel, area, hours_on_air, loudspeakers, online_share, "
        "reported_at) VALUES (:d, :day, :channel, :area, :hours_on_air, :loudspeakers, :online_share, :now) "
        "ON CONFLICT (downstream, day, channel) DO UPDATE SET area = excluded.area, hours_on_air = "
        "excluded.hours_on_air, loudspeakers = excluded.loudspeakers, online_share = excluded.online_share, "
        "reported_at = excluded.reported_at", [{**d, "d": downstream, "now": now} for d in days])
    _touch(conn, downstream, "report", now)
    return {"plays": len(plays) - unknown, "new_plays": new, "unknown_bulletin": unknown,
            "loudspeakers": len(inventory or []), "days": len(days)}


def _results(conn: sqlite3.Connection, bulletin: str) -> list[dict[str, Any]]:
    return rows(conn, "SELECT downstream, play_id, channel, area, slot, started_at, ended_at, duration_s, outcome, "
                      "online, acknowledged, received_at FROM link_plays WHERE bulletin = ? "
                      "ORDER BY started_at, downstream, play_id", (bulletin,))


def _downstreams(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    found = {r["id"]: r for r in rows(conn, "SELECT * FROM link_downstreams")}
    for r in rows(conn, "SELECT downstream, COUNT(*) AS n, SUM(status = 'online') AS online "
                        "FROM link_loudspeakers GROUP BY downstream"):
        found.setdefault(r["downstream"], {"id": r["downstream"]}).update(loudspeakers=r["n"], online=r["online"])
    return found


def _feed_media(conn: sqlite3.Connection, bulletin: str) -> dict[str, Any] | None:
    """A bulletin that may go down and its own recording (not its speech): its zones and the file."""
    row = one(conn, "SELECT b.zones, b.state, m.path, m.size_bytes, m.sha256 FROM bulletins b JOIN media m "
                    "ON m.id = b.media WHERE b.id = ? AND b.source IN ('local', 'province')", (bulletin,))
    if row is not None:
        row["zones"] = json.loads(row["zones"] or "[]")
    return row


def _fetched_media(conn: sqlite3.Connection, origin: str, upstream_media: str) -> str | None:
    """Our media item made from an upstream recording, if it is still in the library."""
    row = one(conn, "SELECT l.media FROM link_media l JOIN media m ON m.id = l.media WHERE l.origin = ? "
                    "AND l.upstream_media = ?", (origin, upstream_media))
    return None if row is None else str(row["media"])


def _record_media(conn: sqlite3.Connection, origin: str, upstream_media: str, media: str, now: float) -> None:
    conn.execute("INSERT OR REPLACE INTO link_media (origin, upstream_media, media, fetched_at) VALUES (?,?,?,?)",
                 (origin, upstream_media, media, now))


def _bulletin_zones(conn: sqlite3.Connection, bulletin: str) -> list[str] | None:
    row = one(conn, "SELECT zones FROM bulletins WHERE id = ?", (bulletin,))
    return None if row is None else list(json.loads(row["zones"] or "[]"))


class LinkRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # downstream
    def imports(self, origin: str) -> Deferred[dict[str, dict[str, Any]]]:
        return self.db.read("link.imports", _imports, origin)

    def record_import(self, origin: str, upstream_id: str, version: int, state: str, bulletin: str | None,
                      now: float) -> Deferred[None]:
        return self.db.run("link.record_import", _record_import, origin, upstream_id, version, state, bulletin, now)

    def cursors(self) -> Deferred[dict[str, str]]:
        return self.db.read("link.cursors", _cursors)

    def set_cursors(self, values: dict[str, str], now: float) -> Deferred[None]:
        return self.db.run("link.set_cursors", _set_cursors, values, now)

    def plays_after(self, after: int, origin: str, limit: int,
                    stale_before: float) -> Deferred[tuple[list[dict[str, Any]], int]]:
        return self.db.read("link.plays_after", _plays_after, after, origin, limit, stale_before)

    def inventory(self, limit: int) -> Deferred[list[dict[str, Any]]]:
        return self.db.read("link.inventory", _inventory, limit)

    def daily(self, days: Sequence[tuple[str, float, float]], now: float) -> Deferred[list[dict[str, Any]]]:
        return self.db.report("link.daily", _daily, days, now)

    # upstream
    def feed_rows(self, now: float) -> Deferred[list[dict[str, Any]]]:
        return self.db.read("link.feed", _feed_rows, now)

    def touch(self, downstream: str, what: str, now: float, error: str | None = None,
              digest: str | None = None) -> Deferred[None]:
        return self.db.run("link.touch", _touch, downstream, what, now, error, digest)

    def store_report(self, downstream: str, plays: list[dict[str, Any]], inventory: list[dict[str, Any]] | None,
                     days: list[dict[str, Any]], now: float) -> Deferred[dict[str, int]]:
        return self.db.run("link.store_report", _store_report, downstream, plays, inventory, days, now)

    def results(self, bulletin: str) -> Deferred[list[dict[str, Any]]]:
        return self.db.read("link.results", _results, bulletin)

    def bulletin_zones(self, bulletin: str) -> Deferred[list[str] | None]:
        """A bulletin's target zones (None: no such bulletin), to check who may see its results."""
        return self.db.read("link.bulletin_zones", _bulletin_zones, bulletin)

    def feed_media(self, bulletin: str) -> Deferred[dict[str, Any] | None]:
        return self.db.read("link.feed_media", _feed_media, bulletin)

    def fetched_media(self, origin: str, upstream_media: str) -> Deferred[str | None]:
        return self.db.read("link.fetched_media", _fetched_media, origin, upstream_media)

    def record_media(self, origin: str, upstream_media: str, media: str, now: float) -> Deferred[None]:
        return self.db.run("link.record_media", _record_media, origin, upstream_media, media, now)

    def downstreams(self) -> Deferred[dict[str, dict[str, Any]]]:
        return self.db.read("link.downstreams", _downstreams)

    def push_digest(self, downstream: str) -> Deferred[str | None]:
        def get(conn: sqlite3.Connection) -> str | None:
            row = one(conn, "SELECT push_digest FROM link_downstreams WHERE id = ?", (downstream,))
            return None if row is None else row["push_digest"]
        return self.db.read("link.push_digest", get)

    def loudspeakers(self, downstream: str, limit: int, offset: int) -> Deferred[Page]:
        return self.db.read("link.loudspeakers", lambda conn: page(
            conn, "SELECT id, name, area, channel, lat, lon, status, last_seen, reported_at FROM link_loudspeakers "
                  "WHERE downstream = ? ORDER BY id", (downstream,), limit, offset))

    def days(self, downstream: str, since: str, until: str) -> Deferred[list[dict[str, Any]]]:
        return self.db.read("link.days", lambda conn: rows(
            conn, "SELECT day, channel, area, hours_on_air, loudspeakers, online_share, reported_at FROM link_daily "
                  "WHERE downstream = ? AND day >= ? AND day <= ? ORDER BY day, channel", (downstream, since, until)))

