"""The broadcast log, the audit log and loudspeaker online sessions.

The audio path produces log entries at any moment, on any thread, and must
never wait: ``note_play``, ``play_ended``, ``session_started``,
``session_ended``, ``heartbeat`` and ``enqueue`` only append to an in-memory
queue under its own lock (never the database's); ``flush()`` writes the
queue in one transaction. A failed flush keeps every entry for the next try.

Loop side (Deferred): ``flush``, ``plays_started``, ``audit``, ``broadcasts``,
``audits``. Sync (start-up, CLI, tests): ``flush_sync``,
``plays_started_sync``, ``close_dangling_sync``, ``audit_sync``. Inside
another repository's transaction: ``audit_txn(conn, ...)``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from broadcaster.storage.db import Database, Page, one, page, zone_filter


@dataclass(frozen=True)
class Actor:
    """Who asks for a change, for the audit log."""

    name: str
    remote: str | None = None


SYSTEM = Actor("system")


def audit_txn(conn: sqlite3.Connection, actor: Actor, action: str, target: str, zone: str | None,
              detail: str = "") -> None:
    conn.execute("INSERT INTO audit_log (at, actor, action, target, zone, remote, detail) VALUES (?,?,?,?,?,?,?)",
                 (time.time(), actor.name, action, target, zone, actor.remote, detail))


@dataclass(frozen=True)
class LogQuery:
    """A page of a log: the caller's visible zones (None: all), an optional
    subtree to narrow to, a time range on the log's own time column."""

    visible: Collection[str] | None = None
    subtree: Collection[str] | None = None
    start: float | None = None
    end: float | None = None
    limit: int = 50
    offset: int = 0


BROADCAST_COLUMNS = "id, channel, zone, kind, item, started_at, ended_at, started_by, outcome, detail"
AUDIT_COLUMNS = "id, at, actor, action, target, zone, remote, detail"


def _log_page(conn: sqlite3.Connection, table: str, columns: str, time_column: str, q: LogQuery) -> Page:
    where, args = zone_filter("zone", q.visible)
    filters, extra = [where], list(args)
    if q.subtree is not None:
        term, targs = zone_filter("zone", q.subtree)
        filters.append(term)
        extra += targs
    if q.start is not None:
        filters.append(f"{time_column} >= ?")
        extra.append(q.start)
    if q.end is not None:
        filters.append(f"{time_column} < ?")
        extra.append(q.end)
    return page(conn, f"SELECT {columns} FROM {table} WHERE {' AND '.join(filters)} "
                f"ORDER BY {time_column} DESC, id DESC", extra, q.limit, q.offset)


class LogRepository:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue_lock = threading.Lock()
        self._pending: list[tuple[str, tuple[Any, ...]]] = []

    # --- queued writes: never wait ---------------------------------------------

    def enqueue(self, sql: str, args: tuple[Any, ...]) -> None:
        """A write applied at the next flush, in order. Takes only the queue's lock."""
        with self._queue_lock:
            self._pending.append((sql, args))

    def note_play(self, ids: Sequence[int], note: str) -> None:
        for entry in ids:
            self.enqueue("UPDATE broadcast_log SET detail = TRIM(detail || ' ' || ?) WHERE id = ?", (note, entry))

    def play_ended(self, ids: Sequence[int], outcome: str, now: float) -> None:
        for entry in ids:
            self.enqueue("UPDATE broadcast_log SET ended_at = ?, outcome = ? WHERE id = ? AND ended_at IS NULL",
                         (now, outcome, entry))

    def session_started(self, device_id: str, zone: str, channel: str, now: float) -> None:
        self.enqueue("INSERT INTO speaker_sessions (loudspeaker, zone, channel, started_at) VALUES (?,?,?,?)",
                     (device_id, zone, channel, now))

    def session_ended(self, device_id: str, now: float) -> None:
        self.enqueue("UPDATE speaker_sessions SET ended_at = ? WHERE loudspeaker = ? AND ended_at IS NULL",
                     (now, device_id))

    def heartbeat(self, now: float) -> None:
        self.enqueue("INSERT OR REPLACE INTO meta (key, value) VALUES ('heartbeat', ?)", (now,))

    def pending(self) -> int:
        with self._queue_lock:
            return len(self._pending)

    def _write_pending(self, conn: sqlite3.Connection) -> int:
        with self._queue_lock:
            batch, self._pending = self._pending, []
        try:
            for sql, args in batch:
                conn.execute(sql, args)
        except BaseException:
            with self._queue_lock:
                self._pending[:0] = batch  # kept for the next try: no log entry is lost
            raise
        return len(batch)

    def flush(self) -> Deferred[int]:
        """Write the queue in one transaction in a worker; fires with the count written."""
        return self.db.run("logs.flush", self._write_pending)

    def flush_sync(self) -> int:
        with self._queue_lock:
            if not self._pending:
                return 0
        return self.db.run_sync(self._write_pending)

    # --- plays whose ids are needed at once ---------------------------------------

    @staticmethod
    def _plays_started(conn: sqlite3.Connection, channels: Sequence[tuple[str, str]], kind: str, item: str,
                       by: str, detail: str, now: float) -> list[int]:
        ids = []
        for channel, zone in channels:
            cursor = conn.execute("INSERT INTO broadcast_log (channel, zone, kind, item, started_at, started_by, "
                                  "detail) VALUES (?,?,?,?,?,?,?)", (channel, zone, kind, item, now, by, detail))
            ids.append(int(cursor.lastrowid or 0))
        return ids

    def plays_started(self, channels: Sequence[tuple[str, str]], kind: str, item: str, by: str, now: float,
                      detail: str = "") -> Deferred[list[int]]:
        """One broadcast-log entry per (channel id, channel zone); fires with their ids."""
        return self.db.run("logs.plays_started", self._plays_started, channels, kind, item, by, detail, now)

    def plays_started_sync(self, channels: Sequence[tuple[str, str]], kind: str, item: str, by: str, now: float,
                           detail: str = "") -> list[int]:
        return self.db.run_sync(self._plays_started, channels, kind, item, by, detail, now)

    def close_dangling_sync(self) -> float | None:
        """What a crash left open ends at the last heartbeat written; returns that time."""
        def close(conn: sqlite3.Connection) -> float | None:
            row = one(conn, "SELECT value FROM meta WHERE key = 'heartbeat'")
            if row is None:
                return None
            beat = float(row["value"])
            conn.execute("UPDATE speaker_sessions SET ended_at = MAX(started_at, ?) WHERE ended_at IS NULL", (beat,))
            conn.execute("UPDATE broadcast_log SET ended_at = MAX(started_at, ?), outcome = 'interrupted' "
                         "WHERE ended_at IS NULL", (beat,))
            return beat
        return self.db.run_sync(close)

    # --- the audit log -------------------------------------------------------------

    def audit(self, actor: Actor, action: str, target: str, zone: str | None, detail: str = "") -> Deferred[None]:
        return self.db.run("logs.audit", audit_txn, actor, action, target, zone, detail)

    def audit_sync(self, actor: Actor, action: str, target: str, zone: str | None, detail: str = "") -> None:
        self.db.run_sync(audit_txn, actor, action, target, zone, detail)

    # --- pages for the API ------------------------------------------------------------

    def broadcasts(self, query: LogQuery) -> Deferred[Page]:
        return self.db.read("logs.broadcasts", _log_page, "broadcast_log", BROADCAST_COLUMNS, "started_at", query)

    def audits(self, query: LogQuery) -> Deferred[Page]:
        return self.db.read("logs.audits", _log_page, "audit_log", AUDIT_COLUMNS, "at", query)
